"""2 gloo processes under torchrun (the real `volo train` CLI) match 1 process with the same global batch.

Global batch 8 = 2 processes x 4 = 1 process x 4 x accumulation 2: the same images per step and, since the
stem's BatchNorm normalises per forward, the same batch-norm groups of 4 (the sampler gives rank r the r-th block
of each global batch, and accumulation micro-batch r is that same block).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from volo.cli.main import main


def _square_dataset(root, classes=3, per_class=8, size=32):
    """Square images exactly img_size wide: with scale_min=1 the crop is the whole image and the resize is a copy,
    so the data are identical whichever process (and random state) reads them."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 3)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                y, x = rng.integers(0, size // 2, 2)
                arr[y : y + size // 2, x : x + size // 2, c] = 230
                Image.fromarray(arr).save(d / f"{i}.jpg", quality=95)


COMMON = [
    "model.num_classes=3",
    "model.img_size=32",
    "token_labels.size=null",
    "token_labels.mixtoken=false",
    "data.rand_augment=",
    "data.reprob=0",
    "data.hflip=0",
    "data.scale_min=1.0",
    "data.workers=0",
    "train.log_every=1",
    "train.progress=false",
    "train.max_steps=5",
    "schedule.epochs=3",
    "schedule.warmup_epochs=1",
    "checkpoint.every_steps=0",
]


def _args(data, out, name, accumulation):
    args = ["train", "debug", "--data", str(data), "--out", str(out), "--name", name]
    for item in [*COMMON, "train.batch_size=4", f"train.accumulation={accumulation}"]:
        args += ["--set", item]
    return args


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.timeout(240)
def test_two_gloo_processes_match_one(tmp_path):
    _square_dataset(tmp_path / "data")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "volo.cli.main",
        *_args(tmp_path / "data", tmp_path / "runs", "two", 1),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(_args(tmp_path / "data", tmp_path / "runs", "one", 2)) == 0
    one = _rows(tmp_path / "runs" / "one" / "metrics" / "steps.jsonl")
    two = _rows(tmp_path / "runs" / "two" / "metrics" / "steps.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4, 5]
    for a, b in zip(one, two):
        assert b["lr"] == a["lr"]  # LR scaled by the same global batch (2 x 4 x 1 = 1 x 4 x 2)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    ep_one = _rows(tmp_path / "runs" / "one" / "metrics" / "epochs.jsonl")[-1]
    ep_two = _rows(tmp_path / "runs" / "two" / "metrics" / "epochs.jsonl")[-1]
    assert ep_two["top1"] == ep_one["top1"]  # distributed eval: shard counts summed over ranks
    cfg = (tmp_path / "runs" / "two" / "config.yaml").read_text()
    assert "batch_size: 4" in cfg


@pytest.mark.timeout(300)
def test_ddp_in_run_eval_equals_volo_eval_of_the_exported_weights(tmp_path, capsys):
    """Each rank's stem BatchNorm sees other images, so the ranks' running statistics differ after training; the
    in-run evaluation (sharded over both ranks) must still be the evaluation of rank 0's exported weights."""
    _square_dataset(tmp_path / "data", per_class=16)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["train", "debug", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--name", "ddp"]
    for item in [*COMMON, "train.batch_size=4", "train.max_steps=null", "schedule.epochs=2", "data.hflip=0.5"]:
        args += ["--set", item]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    proc = subprocess.run([*cmd, "volo.cli.main", *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plain labels (no token labels)" in proc.stdout  # the start-up line says whether token labels are on
    in_run = _rows(tmp_path / "runs" / "ddp" / "metrics" / "epochs.jsonl")[-1]
    weights = tmp_path / "runs" / "ddp" / "weights" / "final.safetensors"
    capsys.readouterr()
    assert main(["eval", str(weights), "--data", str(tmp_path / "data" / "val"), "--workers", "0", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["images"] == 9
    assert exported["top1"] == in_run["top1"]
    assert exported["loss"] == pytest.approx(in_run["val_loss"], rel=1e-5, abs=1e-6)
