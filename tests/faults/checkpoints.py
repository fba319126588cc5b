"""Helpers of the checkpoint fault tests: a real finished 1-epoch run, a copy of its checkpoints, and
`--resume auto` resolved on them."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from faults import make_data, tiny_config
from volo.training.checkpoint import resolve_resume

NEWEST, PREVIOUS = "epoch0001_step000000004.pt", "step000000003.pt"
"""The checkpoints of `finished_run`: after its 4th (last) step, at the epoch end, and after its 3rd."""


def one_epoch_config(data: Path, out: Path, name: str, *extra: str):
    """The tiny run of these tests: 1 epoch of 4 steps, no warmup, a checkpoint after every step."""
    return tiny_config(data, out, name, "schedule.epochs=1", "schedule.warmup_epochs=0", *extra)


def finished_run(root: Path) -> tuple[Path, Path]:
    """(data, run folder) of a real 1-epoch run under `root`, with a checkpoint after each of its 4 steps."""
    from volo.training.trainer import train

    data = make_data(root / "data")
    train(one_epoch_config(data, root / "runs", "good"))
    run_dir = root / "runs" / "good"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == NEWEST
    return data, run_dir


def copy_checkpoints(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of `run_dir` under tmp_path/runs (the original stays intact for other tests); its checkpoints folder."""
    dst = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst / "checkpoints"


def resume_auto(ckpts: Path) -> tuple[Path, list[str]]:
    """The checkpoint `--resume auto` picks in `ckpts`, and the warnings it gave on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = resolve_resume("auto", ckpts)
    assert found is not None
    return found[0], [str(w.message) for w in caught]
