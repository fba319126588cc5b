"""AdamW with the VOLO parameter groups, and the learning rate scaled by the real global batch.

No weight decay on `pos_embed`, `cls_token`, biases and normalisation weights (every 1-D parameter), as the
reference (timm's `add_weight_decay`) does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from volo.training.config import OptimConfig

REFERENCE_BATCH = 1024
NO_DECAY_NAMES = ("pos_embed", "cls_token")


@dataclass(frozen=True)
class BatchGeometry:
    """How many images one optimiser step sees."""

    world_size: int
    batch_per_gpu: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_per_gpu * self.accumulation


def scaled_lr(lr_base: float, geometry: BatchGeometry) -> float:
    """LR = lr_base * global_batch / 1024."""
    return lr_base * geometry.global_batch / REFERENCE_BATCH


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and the no-decay set (pos_embed, cls_token, every 1-D parameter)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get no weight decay (for reports and tests)."""
    ids = {id(p) for p in param_groups(model, 0.0)[1]["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over `param_groups`; fused (CUDA and CPU) when `cfg.fused`, which also lets a step be skipped on the
    device (`optimizer.found_inf`, see `StepContext.skip_on_device`) without a host sync."""
    opt = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        fused=True if cfg.fused else None,
    )
    return opt


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
