"""One optimiser step: accumulate micro-batches (DDP no_sync), MixToken, token-labeling loss, clip, skip non-finite.

No host synchronisation: the loss sum, the gradient norm and the skip count stay on the device until the trainer
logs them. A step whose gradient norm is NaN/inf (a NaN loss on any rank makes it so, since DDP averages the
gradients) is skipped on the device through the fused AdamW's `found_inf` input, and counted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from volo.data.batch import Batch
from volo.data.targets import build_targets
from volo.training.loss import TokenLabelingLoss
from volo.training.mixtoken import mix_targets, sample_mix_box


@dataclass
class StepContext:
    """What every step needs; built once by the trainer."""

    net: nn.Module
    """The model as trained (DDP- and/or compile-wrapped)."""
    ddp: nn.Module | None
    """The DistributedDataParallel wrapper (for `no_sync`), None in a single process."""
    params: list[torch.Tensor]
    """The parameters whose gradients are clipped / checked."""
    optimizer: torch.optim.Optimizer
    loss_fn: TokenLabelingLoss
    device: torch.device
    num_classes: int
    smoothing: float
    mixtoken: bool
    mix_rng: np.random.Generator
    """Host RNG of the MixToken boxes (its state is checkpointed with the numpy state)."""
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    clip_grad: float | None
    cuda_graphs: bool = False
    """The compiled model replays CUDA graphs: each forward starts a new step for torch.compile's graph trees."""
    skip_on_device: bool = False
    """The optimiser is a fused AdamW: a non-finite step is skipped through its `found_inf` input, no host sync."""


@dataclass
class StepStats:
    """Device tensors of one optimiser step (read them only when logging)."""

    parts: torch.Tensor
    """(4,): mean total loss, class loss and token loss over the micro-batches (this rank), then 1.0 when the step
    was skipped (non-finite gradients), else 0.0."""
    grad_norm: torch.Tensor

    @property
    def skipped(self) -> torch.Tensor:
        return self.parts[3]


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)).float(), 2.0)


def train_step(ctx: StepContext, micro_batches: list[Batch]) -> StepStats:
    """Forward/backward every micro-batch, then one optimiser step (or a counted skip)."""
    n = len(micro_batches)
    total = torch.zeros(3, device=ctx.device)
    for i, batch in enumerate(micro_batches):
        batch = batch.to(ctx.device, non_blocking=True)
        targets = build_targets(batch, ctx.num_classes, ctx.smoothing)
        box = None
        if ctx.mixtoken:
            grid = (batch.images.shape[2] // 16, batch.images.shape[3] // 16)
            mix = sample_mix_box(grid, ctx.mix_rng)
            box = mix.box.to(ctx.device, non_blocking=True)
            targets = mix_targets(targets, mix.lam)
        sync = contextlib.nullcontext() if (ctx.ddp is None or i == n - 1) else ctx.ddp.no_sync()
        autocast = (
            torch.autocast(ctx.device.type, dtype=ctx.amp_dtype)
            if ctx.amp_dtype is not None
            else contextlib.nullcontext()
        )
        if ctx.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with sync:
            with autocast:
                out = ctx.net(batch.images, mix_box=box)
            parts = ctx.loss_fn(out, targets)
            loss = parts.total / n
            (ctx.scaler.scale(loss) if ctx.scaler is not None else loss).backward()
        total += torch.stack([parts.total.detach(), parts.cls.detach(), parts.tokens.detach()]).float() / n

    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if ctx.clip_grad is not None:
        norm = torch.nn.utils.clip_grad_norm_(ctx.params, ctx.clip_grad, foreach=True)
    else:
        norm = _grad_norm(ctx.params)
    bad = (~torch.isfinite(norm)).float()
    if ctx.scaler is not None:  # the scaler checks inf/NaN itself and lowers its scale
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    elif ctx.skip_on_device:
        ctx.optimizer.found_inf = bad  # fused AdamW: skip the update on the device when bad == 1
        ctx.optimizer.step()
    elif not bad.item():  # non-fused optimiser: one host sync to decide
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return StepStats(torch.cat([total, bad.reshape(1)]), norm.detach().float())
