"""`train.compile` / `train.compile_mode` reach torch.compile, the compiled training step (MixToken, token labels)
traces as one graph and trains exactly like the eager step."""

import pytest
import torch
from conftest import step_losses

from volo.training.trainer import train


@pytest.mark.timeout(300)
def test_compiled_step_matches_eager_and_gets_the_mode(tiny_run, monkeypatch):
    common = ("train.max_steps=4", "train.deterministic=true")
    eager = train(tiny_run("eager", *common))

    real_compile, calls = torch.compile, []

    def recording_compile(model, **kw):  # dynamo + AOT autograd for real, without a C++ toolchain
        calls.append(kw)
        return real_compile(model, backend="aot_eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(tiny_run("compiled", *common, "train.compile=true", "train.compile_mode=max-autotune"))
    assert calls == [{"mode": "max-autotune"}]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # four MixToken boxes, one graph
    assert step_losses(compiled.run_dir) == pytest.approx(step_losses(eager.run_dir), rel=1e-4)


@pytest.mark.timeout(600)
def test_whole_step_with_sparse_targets_is_one_graph_and_matches_eager():
    """targets + model + loss (`forward_loss`, sparse token targets, lam from the box on the device) trace as ONE
    graph for every MixToken box, and give the eager step's loss and gradients."""
    import volo
    from volo.data.batch import Batch, identity_transforms
    from volo.training.loss import TokenLabelingLoss
    from volo.training.step import forward_loss

    torch.manual_seed(0)
    model = volo.create_model("volo_tiny", img_size=64, num_classes=10).train()
    gen = torch.Generator().manual_seed(1)
    batch = Batch(
        images=torch.randn(2, 3, 64, 64, generator=gen),
        labels=torch.randint(0, 10, (2,), generator=gen),
        label_transform=identity_transforms(2),
        label_values=torch.randn(2, 3, 4, 4, generator=gen).half(),
        label_ids=torch.stack([torch.randperm(10, generator=gen)[:3] for _ in range(32)]).reshape(2, 4, 4, 3)
        .permute(0, 3, 1, 2).contiguous(),
    )  # fmt: skip
    loss_fn = TokenLabelingLoss(0.5, 1.0, False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(forward_loss, backend="aot_eager", fullgraph=True)
    for box in ([0, 1, 3, 4], [1, 0, 2, 2], [0, 0, 4, 4]):
        box = torch.tensor(box)
        losses, grads = [], []
        for fn in (forward_loss, compiled):
            model.zero_grad(set_to_none=True)
            parts = fn(model, loss_fn, batch, box, None, 10, 0.1, None, "sparse")
            parts.total.backward()
            losses.append(parts.total.detach())
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=0)
        for a, b in zip(*grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
