"""Resume keeps the record straight: the epoch's train_loss equals the uninterrupted run's, redone steps leave no
duplicate metric rows, and a changed config is refused (or, with --allow-config-change, warned about and the old
config.yaml kept).

The resume is forced for real: the newest (epoch-end) checkpoint of a finished deterministic run is truncated, so
`--resume auto` falls back to the step-3 checkpoint and redoes step 4, as after a crash.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from faults import make_data, tiny_config, truncate

from volo.cli.main import main
from volo.errors import VoloError
from volo.training.trainer import train

NEWEST = "epoch0001_step000000004.pt"
DET = ("schedule.epochs=1", "schedule.warmup_epochs=0", "train.deterministic=true")


def _rows(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume_rows")
    data = make_data(root / "data")
    train(tiny_config(data, root / "runs", "base", *DET))
    return data, root / "runs" / "base"


def _crashed_copy(run_dir: Path, tmp_path: Path) -> Path:
    """The finished run as a crash during the epoch-end save would leave it (checkpoint of step 4 half-written)."""
    dst = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, dst)
    ckpt = dst / "checkpoints" / NEWEST
    truncate(ckpt, ckpt.stat().st_size // 2)
    return dst


def test_mid_epoch_resume_keeps_train_loss_and_drops_redone_rows(finished, tmp_path: Path):
    data, base = finished
    run_dir = _crashed_copy(base, tmp_path)
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint"):
        train(tiny_config(data, tmp_path / "runs", "base", *DET), resume="auto")
    assert [r["step"] for r in _rows(run_dir, "steps")] == [1, 2, 3, 4]  # step 4 once, not twice
    assert [r["epoch"] for r in _rows(run_dir, "epochs")] == [1]
    resumed, original = _rows(run_dir, "epochs")[0]["train_loss"], _rows(base, "epochs")[0]["train_loss"]
    assert resumed == original, (resumed, original)  # all 4 steps, not only the redone one
    csv_steps = (run_dir / "metrics" / "steps.csv").read_text().splitlines()
    assert len(csv_steps) == 1 + 4
    print(f"\nRELIABILITY resume: train_loss {resumed} == uninterrupted {original}; step rows 1-4 once each")


def test_changed_config_is_refused_then_allowed_with_the_flag(finished, tmp_path: Path, capsys):
    data, base = finished
    run_dir = _crashed_copy(base, tmp_path)
    before = (run_dir / "config.yaml").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VoloError) as info:
            train(tiny_config(data, tmp_path / "runs", "base", *DET, "optim.lr_base=0.01"), resume="auto")
        msg = str(info.value)
        assert msg.startswith(f"Resuming {run_dir / 'checkpoints' / 'step000000003.pt'} with a changed config ")
        assert "optim.lr_base: 0.02 -> 0.01" in msg and "--allow-config-change" in msg
        with pytest.raises(VoloError, match=r"global batch: 8 -> 4 \(processes x train.batch_size"):
            train(tiny_config(data, tmp_path / "runs", "base", *DET, "train.batch_size=4"), resume="auto")
        assert (run_dir / "config.yaml").read_text() == before  # not overwritten by a refused launch
        argv = ["train", "debug", "--data", str(data), "--out", str(tmp_path / "runs"), "--name", "base"]
        for item in [*_sets(), *DET, "optim.lr_base=0.01"]:
            argv += ["--set", item]
        code = main([*argv, "--resume", "auto", "--allow-config-change"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert yaml.safe_load((run_dir / "config.before_step3.yaml").read_text())["optim"]["lr_base"] == 0.02
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr_base"] == 0.01


def _sets() -> list[str]:
    """The `--set` values `tiny_config` applies (the CLI launch must match the checkpoint but for the lr)."""
    from faults import TINY

    return [*TINY, "train.batch_size=8", "checkpoint.every_steps=1", "checkpoint.keep_last=10"]
