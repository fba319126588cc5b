"""How checkpoint files are named inside `<run>/checkpoints/` (see `volo.training.checkpoint` for the layout).

Its own module so that `checkpoint.py` (the manager) and `faults.py` (saving together, the `latest` pointer check)
both import it and neither imports the other back.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from volo.training.checkpoint import Progress

STEP_RE = re.compile(r"step(\d+)")
EPOCH_RE = re.compile(r"^epoch(\d+)_")


def checkpoint_name(progress: Progress, epoch_end: bool) -> str:
    """`epoch0003_step000000120.pt` at an epoch end, `step000000130.pt` inside an epoch."""
    if epoch_end:
        return f"epoch{progress.epoch:04d}_step{progress.step:09d}.pt"
    return f"step{progress.step:09d}.pt"


def step_of(path: Path) -> int:
    """The step number in a checkpoint's name (-1 for a name without one)."""
    m = STEP_RE.search(path.name)
    return int(m.group(1)) if m else -1
