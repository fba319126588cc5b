"""Optional loggers beside the run's CSV/JSONL metrics (which always stay): TensorBoard and Weights & Biases.

`train.tensorboard: true` writes TensorBoard event files in the standard `SummaryWriter` layout,
`<run folder>/tensorboard/events.out.tfevents.*` (`tensorboard --logdir runs/`): every step row under `train/<key>`
(loss, cls_loss, token_loss, grad_norm, lr, images_per_s, ...) and every epoch row under `epoch/<key>` (train_loss,
top1, top5, val_loss, ema_top1, ...), both against the optimiser step. `train.wandb_project: NAME` sends the same
rows to W&B (`wandb.init(project=NAME, name=<run name>, dir=<run folder>, config=<resolved config>)`); without the
`wandb` package that hook does nothing but say so once. Only rank 0 logs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from volo.errors import VoloError

if TYPE_CHECKING:
    import torch

    from volo.training.config import RunConfig

SECTIONS = {"steps": "train", "epochs": "epoch"}
"""Metrics file -> TensorBoard / W&B tag prefix."""


def warn_cpu_amp(cfg: RunConfig, device: torch.device) -> None:
    """`train.amp` bf16/fp16 only acts on CUDA: on a CPU run say so, and record `none` (what really runs)."""
    if device.type != "cuda" and cfg.train.amp != "none":
        warnings.warn(
            f"train.amp={cfg.train.amp} has no effect on {device.type} (autocast is CUDA-only here): training in "
            "float32 and recording train.amp=none; pass --set train.amp=none to silence this.",
            stacklevel=2,
        )
        cfg.train.amp = "none"


class RunLoggers:
    """The TensorBoard writer and W&B run of a training run (None each when not asked for / not rank 0)."""

    def __init__(self, run_dir: Path, cfg: RunConfig, enabled: bool):
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise VoloError(
                    "train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                    "(or --set train.tensorboard=false)."
                ) from None
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if cfg.train.wandb_project:
            try:
                import wandb
            except ImportError:
                warnings.warn(
                    f"train.wandb_project={cfg.train.wandb_project} but the wandb package is not installed: no W&B "
                    "logging (pip install wandb); the CSV/JSONL metrics are written as always.",
                    stacklevel=2,
                )
            else:
                self.wandb = wandb.init(
                    project=cfg.train.wandb_project,
                    name=Path(run_dir).name,
                    dir=str(run_dir),
                    config=cfg.to_dict(),
                    resume="allow",
                )

    def log(self, kind: str, row: dict) -> None:
        """One metrics row (`kind` steps or epochs) as scalars at the row's optimiser step."""
        if self.tb is None and self.wandb is None:
            return
        prefix = SECTIONS.get(kind, kind)
        scalars = {
            f"{prefix}/{k}": float(v)
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        step = int(row["step"])
        if self.tb is not None:
            for tag, value in scalars.items():
                self.tb.add_scalar(tag, value, step)
            if kind == "epochs":
                self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
