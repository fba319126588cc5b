"""The network a run trains and how each step runs it: build (a VOLO or a timm teacher), AMP dtype, and the DDP /
`torch.compile` wrapping that `volo.training.step.StepContext` carries.

Compile: a single process compiles the whole step (targets + model + loss as one graph, `volo.training.step`);
under DDP the DDP module itself is compiled (its bucketed graph) and the targets and loss run eagerly.
"""

from __future__ import annotations

import numpy as np
import torch

from volo.distributed.process_group import DistInfo
from volo.labeling.teacher_net import build_timm_teacher, is_timm_name
from volo.models.registry import create_model
from volo.training.config import CUDA_GRAPH_MODES, ModelConfig, RunConfig
from volo.training.loss import TokenLabelingLoss
from volo.training.step import StepContext


def build_model(m: ModelConfig, resuming: bool) -> torch.nn.Module:
    """`model.name` at `model.img_size`; `model.init_checkpoint` is loaded unless resuming (the checkpoint brings
    the weights). `timm:<name>` builds a timm CNN teacher (`volo.labeling.teacher_net`)."""
    build = build_timm_teacher if is_timm_name(m.name) else _create_volo
    return build(
        m.name, m.img_size, m.num_classes, None if resuming else m.init_checkpoint, m.drop_path_rate, m.drop_rate
    )


def _create_volo(name: str, img_size: int, num_classes: int, checkpoint, drop_path_rate: float, drop_rate: float):
    return create_model(
        name,
        img_size=img_size,
        num_classes=num_classes,
        checkpoint=checkpoint,
        drop_path_rate=drop_path_rate,
        drop_rate=drop_rate,
    )


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp`; None on CPU (autocast is CUDA-only here) or with amp none."""
    if device.type != "cuda" or cfg.train.amp == "none":
        return None
    return torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16


def wrap_for_steps(
    cfg: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dist: DistInfo,
    mix_rng: np.random.Generator,
    dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
) -> StepContext:
    """DDP around `model` when the group has more than one process, compile as `train.compile` says, and the
    context `train_step` needs (its `ddp` is the DDP module or None)."""
    net, ddp = model, None
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        # gradients as views into the all-reduce buckets: no copy in or out, one gradient-sized buffer less
        net = ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
    tr, tl = cfg.train, cfg.token_labels
    whole_step = tr.compile and ddp is None
    if tr.compile and not whole_step:
        net = torch.compile(net, mode=None if tr.compile_mode == "default" else tr.compile_mode)
    return StepContext(
        net=net,
        ddp=ddp,
        params=[p for p in model.parameters() if p.requires_grad],
        optimizer=optimizer,
        loss_fn=TokenLabelingLoss(tl.dense_weight, tl.cls_weight, tl.ground_truth),
        device=dist.device,
        num_classes=cfg.model.num_classes,
        smoothing=tl.label_smoothing,
        mixtoken=tl.mixtoken,
        mix_rng=mix_rng,
        amp_dtype=dtype,
        scaler=scaler,
        clip_grad=tr.clip_grad,
        cuda_graphs=tr.compile and tr.compile_mode in CUDA_GRAPH_MODES and dist.device.type == "cuda",
        skip_on_device=cfg.optim.fused,
        compile_mode=tr.compile_mode if whole_step else None,
    )
