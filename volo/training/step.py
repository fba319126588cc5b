"""One optimiser step: accumulate micro-batches (DDP no_sync), MixToken, token-labeling loss, clip, skip non-finite.

No host synchronisation: the loss sum, the gradient norm and the skip count stay on the device until the trainer
logs them. A step whose gradient norm is NaN/inf (a NaN loss on any rank makes it so, since DDP averages the
gradients) is skipped on the device through the fused AdamW's `found_inf` input, and counted.

The forward half of a micro-batch (targets, the model under autocast, the loss) is one function, `forward_loss`;
with `compile_mode` set it is compiled whole (`torch.compile(forward_loss)`): targets, model and loss in one
graph, the token targets sparse (`volo.training.sparse_targets`, no (B, N, K) fp32 tensor) and MixToken's lam
computed from the box on the device, so the box is the only per-step input. `targets='dense'` is the reference
path (`build_targets` + `mix_targets` + `TokenLabelingLoss`); 'auto' is sparse unless torch's deterministic
algorithms are on (the sparse path's scatter-add is not deterministic on CUDA).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from volo.data.batch import Batch
from volo.data.targets import build_targets
from volo.training.loss import LossParts, TokenLabelingLoss, blend_ground_truth
from volo.training.mixtoken import mix_targets, sample_mix_box
from volo.training.sparse_targets import build_sparse_targets, mix_lam, sparse_token_labeling_loss


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
    compile_mode: str | None = None
    """Compile `forward_loss` whole with this torch.compile mode ('default': torch's default); None: eager."""
    targets: str = "auto"
    """Token targets: 'sparse', 'dense' (the reference) or 'auto' (see the module doc)."""

    def __post_init__(self) -> None:
        if self.targets not in ("auto", "sparse", "dense"):
            raise ValueError(f"StepContext.targets must be auto, sparse or dense, not {self.targets!r}.")
        self.forward_loss = forward_loss
        if self.compile_mode is not None:
            mode = None if self.compile_mode == "default" else self.compile_mode
            self.forward_loss = torch.compile(forward_loss, mode=mode)


def forward_loss(
    net: nn.Module,
    loss_fn: TokenLabelingLoss,
    batch: Batch,
    box: torch.Tensor | None,
    lam: float | None,
    num_classes: int,
    smoothing: float,
    amp_dtype: torch.dtype | None,
    targets: str = "auto",
) -> LossParts:
    """Targets of `batch` (on the device), the model's training forward (MixToken `box` or None) and the loss.

    `lam` is MixBox.lam, or None to compute it from `box` on the device (what a compiled step does, so no Python
    float reaches the graph)."""
    grid = (batch.images.shape[2] // 16, batch.images.shape[3] // 16)
    if box is not None and lam is None:
        lam = mix_lam(box, grid)
    if targets == "auto":
        targets = "dense" if torch.are_deterministic_algorithms_enabled() else "sparse"
    autocast = torch.autocast(batch.images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    if targets == "sparse" and batch.has_token_labels:
        sparse = build_sparse_targets(batch, num_classes, smoothing)
        with autocast:
            out = net(batch.images, mix_box=box)
        return sparse_token_labeling_loss(out, sparse, loss_fn, None if box is None else lam)
    dense = build_targets(batch, num_classes, smoothing, method="dense" if targets == "dense" else "auto")
    if loss_fn.ground_truth:  # per sample, before MixToken mixes the class targets (the reference's order)
        dense = blend_ground_truth(dense)
    if box is not None:
        dense = mix_targets(dense, lam)
    with autocast:
        out = net(batch.images, mix_box=box)
    return loss_fn(out, dense)


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
        box, lam = None, None
        if ctx.mixtoken:
            mix = sample_mix_box((batch.images.shape[2] // 16, batch.images.shape[3] // 16), ctx.mix_rng)
            box = mix.box.to(ctx.device, non_blocking=True)
            lam = None if ctx.compile_mode is not None else mix.lam  # compiled: lam from the box, on the device
        sync = contextlib.nullcontext() if (ctx.ddp is None or i == n - 1) else ctx.ddp.no_sync()
        if ctx.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with sync:
            parts = ctx.forward_loss(
                ctx.net, ctx.loss_fn, batch, box, lam, ctx.num_classes, ctx.smoothing, ctx.amp_dtype, ctx.targets
            )
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
