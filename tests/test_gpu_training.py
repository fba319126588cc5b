"""The training step's speed contract: no host synchronisation inside a step (bf16 autocast, token labels,
MixToken, fused AdamW, clipping) and the trainer's compiled CUDA-graph mode training to the same losses as eager
(both GPU-only), plus the same step's code path run on CPU so it cannot rot where there is no GPU."""

import numpy as np
import pytest
import torch
from conftest import step_losses

import volo
from volo.data.batch import Batch, identity_transforms
from volo.training.config import OptimConfig
from volo.training.loss import TokenLabelingLoss
from volo.training.optim import build_optimizer
from volo.training.step import StepContext, train_step
from volo.training.trainer import train

CUDA = torch.cuda.is_available()


def _batch(n: int, classes: int, size: int) -> Batch:
    batch = Batch(
        images=torch.randn(n, 3, size, size),
        labels=torch.randint(0, classes, (n,)),
        label_transform=identity_transforms(n),
        label_values=torch.randn(n, 5, size // 16, size // 16).half(),
        label_ids=torch.randint(0, classes, (n, 5, size // 16, size // 16)),
    )
    return batch.pin_memory() if CUDA else batch


def _context(dev: torch.device, clip: float | None) -> StepContext:
    torch.manual_seed(0)
    model = volo.create_model("volo_tiny", img_size=64, num_classes=10).to(dev)
    opt = build_optimizer(model, OptimConfig(), 1e-3)
    return StepContext(
        net=model,
        ddp=None,
        params=list(model.parameters()),
        optimizer=opt,
        loss_fn=TokenLabelingLoss(0.5, 1.0, False),
        device=dev,
        num_classes=10,
        smoothing=0.1,
        mixtoken=True,
        mix_rng=np.random.default_rng(0),
        amp_dtype=torch.bfloat16,
        scaler=None,
        clip_grad=clip,
        skip_on_device=True,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("clip", [None, 1.0])
def test_train_step_never_synchronises_with_the_host(clip):
    ctx = _context(torch.device("cuda"), clip)
    batches = [_batch(8, 10, 64) for _ in range(4)]
    train_step(ctx, [batches[0]])  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = [train_step(ctx, [b]) for b in batches[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(s.parts[0]) and s.skipped == 0 for s in stats)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_train_step_code_path_on_cpu(clip):
    """The step above (bf16 autocast, token labels, MixToken, fused AdamW skipping on the device, clipping) on CPU."""
    ctx = _context(torch.device("cpu"), clip)
    before = [p.detach().clone() for p in ctx.params]
    stats = [train_step(ctx, [_batch(4, 10, 64)]) for _ in range(2)]
    assert all(bool(torch.isfinite(s.parts[:3]).all()) and s.skipped == 0 for s in stats)
    assert all(torch.isfinite(s.grad_norm) and s.grad_norm > 0 for s in stats)
    assert any(not torch.equal(a, p) for a, p in zip(before, ctx.params))  # the optimiser stepped


@pytest.mark.gpu
def test_cuda_graph_mode_trains_like_eager(tiny_run):
    losses = {}
    for name, extra in {"eager": [], "graphs": ["train.compile=true", "train.compile_mode=reduce-overhead"]}.items():
        sets = ("train.batch_size=8", "train.max_steps=6", "train.amp=none", "model.drop_path_rate=0.0", *extra)
        result = train(tiny_run(name, *sets, px=72, per_class=8, img_size=64))
        losses[name] = step_losses(result.run_dir)
    assert len(losses["graphs"]) == 6
    assert losses["graphs"] == pytest.approx(losses["eager"], rel=2e-3)  # fp32; TF32 and kernel choice differ
