"""Learning-rate schedule: linear warmup, cosine decay, then cooldown at the floor.

shape 'step' (default): a new value every optimiser step, the cosine starting after the warmup:

    step:  0 ........ warmup ................................ total ........ total + cooldown
    lr:    warmup_lr -> peak   peak --cosine--> min_lr          min_lr ........ min_lr

shape 'reference': exactly what sail-sg's main.py does with timm's CosineLRScheduler (t_in_epochs=True,
warmup_prefix=False, cycle_limit 1): one value per epoch e, constant through the epoch,

    e < warmup:  warmup_lr + e * (peak - warmup_lr) / warmup
    e < epochs:  min_lr + (peak - min_lr) * (1 + cos(pi * e / epochs)) / 2     (cosine counted from epoch 0, so the
                                                                              warmup eats its first part)
    after:       min_lr (the cooldown)

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
    steps_per_epoch: int = 1
    shape: str = "step"
    """'step' or 'reference' (see the module docstring)."""

    def __call__(self, step: int) -> float:
        """LR for optimiser step `step` (0-based)."""
        if self.shape == "reference":
            return self._per_epoch(step // self.steps_per_epoch)
        if step < self.warmup_steps:
            return self.warmup_lr + (self.peak_lr - self.warmup_lr) * step / self.warmup_steps
        if step >= self.cosine_end:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.cosine_end - self.warmup_steps)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def _per_epoch(self, epoch: int) -> float:
        warmup, epochs = self.warmup_steps // self.steps_per_epoch, self.cosine_end // self.steps_per_epoch
        if epoch < warmup:
            return self.warmup_lr + epoch * (self.peak_lr - self.warmup_lr) / warmup
        if epoch >= epochs:
            return self.min_lr
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))


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
        steps_per_epoch=steps_per_epoch,
        shape=cfg.shape,
    )


def total_epochs(cfg: ScheduleConfig) -> int:
    """Epochs a run lasts: the cosine epochs plus the cooldown."""
    return cfg.epochs + cfg.cooldown_epochs
