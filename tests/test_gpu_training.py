"""GPU-only checks of the training step's speed contract (skipped without CUDA): no host synchronisation inside
a step (bf16 autocast, token labels, MixToken, fused AdamW, clipping), and the trainer's compiled CUDA-graph mode
training to the same losses as eager."""

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

pytestmark = pytest.mark.gpu


def _batch(n: int, classes: int, size: int) -> Batch:
    return Batch(
        images=torch.randn(n, 3, size, size).pin_memory(),
        labels=torch.randint(0, classes, (n,)).pin_memory(),
        label_transform=identity_transforms(n).pin_memory(),
        label_values=torch.randn(n, 5, size // 16, size // 16).half().pin_memory(),
        label_ids=torch.randint(0, classes, (n, 5, size // 16, size // 16)).pin_memory(),
    )


@pytest.mark.parametrize("clip", [None, 1.0])
def test_train_step_never_synchronises_with_the_host(clip):
    dev = torch.device("cuda")
    model = volo.create_model("volo_tiny", img_size=64, num_classes=10).to(dev)
    opt = build_optimizer(model, OptimConfig(), 1e-3)
    ctx = StepContext(
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
    batches = [_batch(8, 10, 64) for _ in range(4)]
    train_step(ctx, [batches[0]])  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = [train_step(ctx, [b]) for b in batches[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(s.loss) and s.skipped == 0 for s in stats)


def test_cuda_graph_mode_trains_like_eager(tiny_run):
    losses = {}
    for name, extra in {"eager": [], "graphs": ["train.compile=true", "train.compile_mode=reduce-overhead"]}.items():
        sets = ("train.batch_size=8", "train.max_steps=6", "train.amp=none", "model.drop_path_rate=0.0", *extra)
        result = train(tiny_run(name, *sets, px=72, per_class=8, img_size=64))
        losses[name] = step_losses(result.run_dir)
    assert len(losses["graphs"]) == 6
    assert losses["graphs"] == pytest.approx(losses["eager"], rel=2e-3)  # fp32; TF32 and kernel choice differ
