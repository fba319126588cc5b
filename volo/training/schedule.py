"""Learning-rate schedule: linear warmup, cosine decay, then cooldown at the floor; one value per optimiser step.

    step:  0 ........ warmup ................................ total ........ total + cooldown
    lr:    warmup_lr -> peak   peak --cosine--> min_lr          min_lr ........ min_lr

A pure function of the step (no state), so a resumed run gets the same LR from its saved step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from volo.training.config import ScheduleConfig


@dataclass(frozen=True)
class LrSchedule:
    """The schedule in optimiser steps."""

    peak_lr: float
    """LR after warmup (already scaled by the global batch)."""
    warmup_lr: float
    min_lr: float
    warmup_steps: int
    cosine_end: int
    """Step at which the cosine reaches min_lr (= epochs * steps_per_epoch)."""
    total_steps: int
    """cosine_end + cooldown steps: the length of the run."""

    def __call__(self, step: int) -> float:
        """LR for optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr + (self.peak_lr - self.warmup_lr) * step / self.warmup_steps
        if step >= self.cosine_end:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.cosine_end - self.warmup_steps)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


def build_schedule(cfg: ScheduleConfig, peak_lr: float, steps_per_epoch: int) -> LrSchedule:
    """The schedule of `cfg` with `steps_per_epoch` optimiser steps per epoch."""
    assert steps_per_epoch >= 1
    cosine_end = cfg.epochs * steps_per_epoch
    return LrSchedule(
        peak_lr=peak_lr,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        cosine_end=cosine_end,
        total_steps=cosine_end + cfg.cooldown_epochs * steps_per_epoch,
    )


def total_epochs(cfg: ScheduleConfig) -> int:
    """Epochs a run lasts: the cosine epochs plus the cooldown."""
    return cfg.epochs + cfg.cooldown_epochs
