"""The training step the benchmarks time: the real one, for ours and for timm's VOLO alike.

One step = a token-labeled batch (teacher top-5 maps over a 14x14 label grid, as the label store holds them) ->
targets on the device -> MixToken -> the training forward (class head + token head) -> the token-labeling loss
(class CE + 0.5 x token CE, label smoothing 0.1) -> backward -> fused AdamW step.

- ours: `volo.training.step.train_step`, exactly what `volo train` runs: sparse token targets, lam from the box on
  the device, and with `--compile` the whole `forward_loss` (targets + model + loss) compiled as one graph.
- timm: timm's own MixToken (`forward_train` with `mix_token=True`, its box drawn inside the model), then the
  reference targets of the original TokenLabeling code (dense (B, N, K) soft targets, `build_targets(method=
  'dense')` + `mix_targets`) and the same loss; with `--compile` the model is compiled, as a timm user would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import volo
from volo.data.batch import Batch, identity_transforms
from volo.data.targets import build_targets
from volo.training.loss import TokenLabelingLoss
from volo.training.mixtoken import mix_targets
from volo.training.step import StepContext, train_step

TOP_K = 5
LABEL_GRID = 14
SMOOTHING = 0.1


def token_label_batch(batch: int, img_size: int, num_classes: int, device: torch.device, seed: int = 0) -> Batch:
    """Random images with random teacher top-k maps (distinct classes per location), on `device`."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.rand(batch * LABEL_GRID * LABEL_GRID, num_classes, generator=gen).argsort(dim=1)[:, :TOP_K]
    ids = ids.reshape(batch, LABEL_GRID, LABEL_GRID, TOP_K).permute(0, 3, 1, 2).contiguous()
    values = (3 * torch.randn(batch, TOP_K, LABEL_GRID, LABEL_GRID, generator=gen)).sort(dim=1, descending=True)[0]
    return Batch(
        images=torch.randn(batch, 3, img_size, img_size, generator=gen),
        labels=torch.randint(0, num_classes, (batch,), generator=gen),
        label_transform=identity_transforms(batch),
        label_values=values.half(),
        label_ids=ids,
    ).to(device)


def make_optimizer(model: nn.Module) -> tuple[torch.optim.Optimizer, str]:
    """AdamW as training builds it (`volo.training.optim`): fused (CUDA and CPU), foreach where there is no fused
    kernel; and which of the two."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True), "fused"
    except RuntimeError:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True), "foreach"


def ours_step(
    model: nn.Module, opt: torch.optim.Optimizer, fused: bool, amp: bool, compile_mode: str | None
) -> Callable[[Batch], None]:
    """`volo train`'s step for `model` (compile_mode: None eager, else the whole step compiled in that mode)."""
    device = next(model.parameters()).device
    ctx = StepContext(
        net=model, ddp=None, params=[p for p in model.parameters() if p.requires_grad], optimizer=opt,
        loss_fn=TokenLabelingLoss(0.5, 1.0, False), device=device, num_classes=model.arch.num_classes,
        smoothing=SMOOTHING, mixtoken=True, mix_rng=np.random.default_rng(0),
        amp_dtype=torch.bfloat16 if amp else None, scaler=None, clip_grad=None,
        cuda_graphs=compile_mode in ("reduce-overhead", "max-autotune") and device.type == "cuda",
        skip_on_device=fused, compile_mode=compile_mode,
    )  # fmt: skip
    return lambda batch: train_step(ctx, [batch])


def timm_step(
    model: nn.Module, opt: torch.optim.Optimizer, amp: bool, compile_mode: str | None
) -> Callable[[Batch], None]:
    """timm's VOLO trained the original TokenLabeling way (see the module doc)."""
    model.mix_token, model.return_dense, model.beta = True, True, 1.0  # timm sets beta only when built so

    def forward(x: torch.Tensor):
        features, token_logits, box = model.forward_train(x)  # timm's forward_train stops before the class head
        return model.head(features), token_logits, box

    if compile_mode is not None:
        forward = torch.compile(forward, mode=None if compile_mode == "default" else compile_mode)
    loss_fn = TokenLabelingLoss(0.5, 1.0, False)
    num_classes = model.num_classes
    device = next(model.parameters()).device

    def step(batch: Batch) -> None:
        targets = build_targets(batch, num_classes, SMOOTHING, method="dense")
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with autocast:
            cls_logits, token_logits, (x1, y1, x2, y2) = forward(batch.images)
        grid = (batch.images.shape[2] // 16) * (batch.images.shape[3] // 16)
        lam = 1.0 - (x2 - x1) * (y2 - y1) / grid
        parts = loss_fn(volo.VoloTrainOutput(cls_logits, token_logits), mix_targets(targets, lam))
        parts.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step
