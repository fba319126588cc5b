"""Helpers of the checkpoint fault tests: copy a finished run's checkpoints, resolve `--resume auto` on them."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from volo.training.checkpoint import resolve_resume


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
