"""`volo train` on the fast data paths: data.loader=dali (CPU-only DALI) and data.loader=nvjpeg (on the CPU).

Both train the debug recipe to finite losses; a DALI run stopped mid-epoch and resumed with `--resume auto`
restores the reader position from the checkpoint (a uint8 blob that loads with weights_only=True) and, in
deterministic mode, repeats the uninterrupted run's losses bit for bit, across the epoch boundary too.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from volo.cli.main import main
from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.training.checkpoint import load_checkpoint, unpack_loader_state
from volo.training.config import load_config
from volo.training.data import build_train_data

SETTINGS = [
    "model.num_classes=4",
    "model.img_size=32",
    "token_labels.size=null",
    "train.batch_size=4",
    "schedule.epochs=2",
    "schedule.warmup_epochs=1",
    "train.log_every=1",
    "train.progress=false",
    "train.deterministic=true",
    "data.rand_augment=rand-m9-mstd0.5-inc1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 JPEGs in 4 classes, no val/ split (no evaluation): 4 steps of batch 4 per epoch."""
    from volo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("backends") / "train"
    make_synthetic_dataset(root, classes=4, per_class=4, size=40, seed=0)
    return root


def _train(data: Path, out: Path, name: str, *settings: str, resume: str | None = None) -> int:
    args = ["train", "debug", "--data", str(data), "--out", str(out), "--name", name]
    for item in [*SETTINGS, *settings]:
        args += ["--set", item]
    return main(args + (["--resume", resume] if resume else []))


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_nvjpeg_loader_trains(data, tmp_path):
    assert _train(data, tmp_path, "nv", "data.loader=nvjpeg", "data.loader_device=cpu") == 0
    losses = _losses(tmp_path / "nv")
    assert sorted(losses) == list(range(1, 9)) and all(math.isfinite(v) and v > 0 for v in losses.values())
    ckpt = load_checkpoint(tmp_path / "nv" / "checkpoints" / "epoch0001_step000000004.pt")
    assert ckpt.loader == [{"backend": "nvjpeg", "epoch": 1, "consumed": 0, "seed": 42, "world_size": 1}]


def test_pytorch_loader_position_goes_through_the_same_resume_path(data, tmp_path):
    """The PyTorch loader's position is saved per rank like the fast loaders'; a resume from it, or from a
    checkpoint without it (an older volo: then `Progress` gives the position), repeats the uninterrupted losses."""
    assert _train(data, tmp_path, "ref", "data.loader=pytorch") == 0
    expected = _losses(tmp_path / "ref")
    assert sorted(expected) == list(range(1, 9))
    assert _train(data, tmp_path, "cut", "data.loader=pytorch", "train.max_steps=3") == 0
    path = tmp_path / "cut" / "checkpoints" / "step000000003.pt"
    assert load_checkpoint(path).loader == [
        {"backend": "pytorch", "epoch": 0, "consumed": 12, "seed": 42, "world_size": 1}
    ]
    shutil.copytree(tmp_path / "cut", tmp_path / "old")
    raw = torch.load(tmp_path / "old" / "checkpoints" / path.name, weights_only=True)
    raw["loader"] = []
    torch.save(raw, tmp_path / "old" / "checkpoints" / path.name)
    for name in ("cut", "old"):
        assert _train(data, tmp_path, name, "data.loader=pytorch", resume="auto") == 0
        assert _losses(tmp_path / name) == expected, name


@pytest.mark.dali
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dali_trains_and_resumes_its_reader_position(data, tmp_path):
    pytest.importorskip("nvidia.dali")
    assert _train(data, tmp_path, "ref", "data.loader=dali") == 0
    expected = _losses(tmp_path / "ref")
    assert sorted(expected) == list(range(1, 9)) and all(math.isfinite(v) and v > 0 for v in expected.values())

    assert _train(data, tmp_path, "cut", "data.loader=dali", "train.max_steps=3") == 0  # stops mid-epoch 1
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "step000000003.pt")
    assert ckpt.progress.step == 3 and ckpt.progress.epoch_consumed == 12
    state = unpack_loader_state(ckpt.loader[0])
    assert state["backend"] == "dali" and (state["epoch"], state["position"]) == (0, 3)
    assert isinstance(state["dali_checkpoint"], bytes) and len(state["dali_checkpoint"]) > 0
    assert ckpt.loader[0]["dali_checkpoint"]["__bytes__"].dtype == torch.uint8

    assert _train(data, tmp_path, "cut", "data.loader=dali", resume="auto") == 0
    resumed = _losses(tmp_path / "cut")
    assert sorted(resumed) == list(range(1, 9))
    assert resumed == expected  # steps 4..8 (the rest of epoch 1 and all of epoch 2) see the same batches


def test_unknown_loader_and_missing_dali_are_one_line_errors(data, monkeypatch):
    with pytest.raises(VoloError, match="data.loader='ffcv' is unknown; choose one of pytorch, dali, nvjpeg"):
        load_config("debug", ["data.loader=ffcv"])
    with pytest.raises(VoloError, match="data.loader_device"):
        load_config("debug", ["data.loader_device=gpu0"])
    cfg = load_config("debug", [*SETTINGS, f"data.path={data}", "data.loader=dali"])
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # `import nvidia.dali` now raises ImportError
    with pytest.raises(VoloError, match=r"pip install nvidia-dali-cuda130` \(or `pip install volo\[dali\]`\)") as err:
        build_train_data(cfg, DistInfo(0, 0, 1, torch.device("cpu"), None), 4)
    assert "\n" not in str(err.value)
