"""AdamW parameter groups (no decay on pos_embed, cls_token, biases, norms) and LR scaling by the global batch."""

import pytest
import torch

from volo.models import create_model
from volo.training.config import OptimConfig
from volo.training.optim import BatchGeometry, build_optimizer, no_decay_names, param_groups, scaled_lr


def test_lr_scaling_uses_real_global_batch():
    assert BatchGeometry(8, 128, 1).global_batch == 1024
    assert scaled_lr(1.6e-3, BatchGeometry(8, 128, 1)) == pytest.approx(1.6e-3, rel=1e-15)
    assert scaled_lr(1.6e-3, BatchGeometry(2, 64, 2)) == pytest.approx(1.6e-3 * 256 / 1024, rel=1e-15)
    assert scaled_lr(1e-3, BatchGeometry(40, 44, 3)) == pytest.approx(1e-3 * 5280 / 1024, rel=1e-15)


def test_no_decay_groups_exact():
    model = create_model("volo_tiny", img_size=32, num_classes=3)
    names = no_decay_names(model)
    all_names = {n for n, _ in model.named_parameters()}
    expected = {n for n, p in model.named_parameters() if p.ndim == 1} | {"pos_embed", "cls_token"}
    assert names == expected
    assert "pos_embed" in names and "cls_token" in names and "norm.weight" in names and "head.bias" in names
    assert "head.weight" not in names and "network.0.0.attn.v.weight" not in names
    groups = param_groups(model, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(all_names)
    # every stem BN weight/bias and every LayerNorm is in the no-decay set
    assert all(n in names for n in all_names if ".norm" in n or "patch_embed.conv.1" in n)


def test_optimizer_builds_fused_and_skips_non_finite_on_device():
    model = create_model("volo_tiny", img_size=32, num_classes=3)
    opt = build_optimizer(model, OptimConfig(), lr=1e-3)
    assert opt.defaults["fused"] is True and opt.defaults["betas"] == (0.9, 0.999)
    p = next(model.parameters())
    before = p.detach().clone()
    for q in model.parameters():
        q.grad = torch.full_like(q, float("nan"))
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert torch.equal(p.detach(), before)
