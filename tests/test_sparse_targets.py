"""The sparse token-label path (`volo.training.sparse_targets`) against the dense reference (`build_targets` with
method='dense' + `mix_targets` + `TokenLabelingLoss`): same loss parts and same gradient, fp64 and fp32."""

from __future__ import annotations

import math

import pytest
import torch

from volo.data.batch import Batch, identity_transforms
from volo.data.targets import build_targets
from volo.models.volo import VoloTrainOutput
from volo.training.loss import TokenLabelingLoss, blend_ground_truth
from volo.training.mixtoken import mix_targets
from volo.training.sparse_targets import (
    build_sparse_targets,
    merge_duplicates,
    mix_lam,
    sparse_soft_cross_entropy,
    sparse_token_labeling_loss,
)


def _batch(B: int, size: int, classes: int, k: int, label_hw: int, seed: int, rotate: bool) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    transform = identity_transforms(B)
    if rotate:  # rotation + zoom-out: points outside the original image, border clamping, fractional weights
        angle = torch.rand(B, generator=gen) * 0.8 - 0.4
        zoom = 1.0 + 0.3 * torch.rand(B, generator=gen)
        transform[:, 0, 0], transform[:, 0, 1] = zoom * angle.cos(), -zoom * angle.sin()
        transform[:, 1, 0], transform[:, 1, 1] = zoom * angle.sin(), zoom * angle.cos()
        transform[:, :, 2] = 0.2 * torch.rand(B, 2, generator=gen) - 0.1
    ids = torch.stack([torch.randperm(classes, generator=gen)[:k] for _ in range(B * label_hw * label_hw)])
    return Batch(
        images=torch.zeros(B, 3, size, size),
        labels=torch.randint(0, classes, (B,), generator=gen),
        label_transform=transform,
        label_values=(4 * torch.randn(B, k, label_hw, label_hw, generator=gen)).half(),
        label_ids=ids.reshape(B, label_hw, label_hw, k).permute(0, 3, 1, 2).contiguous(),
    )


def test_merge_duplicates_sums_runs_and_zeroes_the_rest():
    ids = torch.tensor([[5, 2, 5, 7, 2, 2]])
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    merged_ids, merged = merge_duplicates(ids, values)
    assert merged_ids.tolist() == [[2, 5, 7, 0, 0, 0]]
    assert merged.tolist() == [[13.0, 4.0, 4.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_sparse_soft_ce_equals_dense(smoothing):
    gen = torch.Generator().manual_seed(0)
    K = 50
    y = torch.randn(3, 7, K, generator=gen, dtype=torch.float64)
    ids = torch.stack([torch.randperm(K, generator=gen)[:6] for _ in range(21)]).reshape(3, 7, 6)
    z = 30 * torch.randn(3, 7, 6, generator=gen, dtype=torch.float64)  # large logits: the shift matters
    z[0, 0, 3:] = 0.0  # unused slots
    dense = torch.zeros(3, 7, K, dtype=torch.float64).scatter_(-1, ids, z)
    target = dense.softmax(-1) * (1 - smoothing) + smoothing / K
    expected = -(target * y.log_softmax(-1)).sum(-1).mean()
    got = sparse_soft_cross_entropy(y, ids, z, smoothing)
    assert torch.allclose(got.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("mixtoken", "ground_truth", "rotate"), [(False, False, False), (True, False, True), (True, True, True)]
)
def test_sparse_loss_and_gradient_equal_the_dense_reference(mixtoken, ground_truth, rotate):
    B, size, K, k = 4, 64, 30, 5
    batch = _batch(B, size, K, k, label_hw=6, seed=1, rotate=rotate)
    grid = (size // 16, size // 16)
    gen = torch.Generator().manual_seed(2)
    cls_logits = torch.randn(B, K, generator=gen, dtype=torch.float64, requires_grad=True)
    token_logits = torch.randn(B, math.prod(grid), K, generator=gen, dtype=torch.float64, requires_grad=True)
    out = VoloTrainOutput(cls_logits, token_logits)
    loss_fn = TokenLabelingLoss(0.5, 1.0, ground_truth)
    box = torch.tensor([0, 1, 3, 4]) if mixtoken else None
    lam = 1.0 - 3 * 3 / 16 if mixtoken else None

    dense = unmixed = build_targets(batch, K, 0.1, method="dense")
    if ground_truth:  # per sample, then mixed (the reference's order; see forward_loss)
        dense = blend_ground_truth(dense)
    if mixtoken:
        dense = mix_targets(dense, lam)
    ref = loss_fn(out, dense)
    ref_grads = torch.autograd.grad(ref.total, (cls_logits, token_logits))

    sparse = build_sparse_targets(batch, K, 0.1)
    assert sparse.ids.shape == (B, 16, 4 * 4 * k)
    got = sparse_token_labeling_loss(out, sparse, loss_fn, mix_lam(box, grid) if mixtoken else None)
    got_grads = torch.autograd.grad(got.total, (cls_logits, token_logits))
    for name in ("total", "cls", "tokens"):
        assert torch.allclose(getattr(got, name).double(), getattr(ref, name).double(), rtol=1e-5, atol=0), name
    for a, b in zip(got_grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert torch.allclose(sparse.cls, unmixed.cls, rtol=1e-5, atol=1e-7)


def test_mix_lam_is_the_host_lam():
    import numpy as np

    from volo.training.mixtoken import sample_mix_box

    rng = np.random.default_rng(0)
    for _ in range(20):
        mix = sample_mix_box((14, 14), rng)
        assert mix_lam(mix.box, (14, 14)).item() == pytest.approx(mix.lam, abs=1e-7)
