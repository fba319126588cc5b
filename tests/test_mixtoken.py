"""MixToken: box sampling, class-target mixing, and the un-mixed token logits against mixed label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import volo
from volo.data.batch import Batch
from volo.data.targets import Targets, build_targets
from volo.training.loss import TokenLabelingLoss, soft_cross_entropy
from volo.training.mixtoken import mix_class_target, mix_targets, mix_token_targets, sample_mix_box


def test_box_is_on_the_grid_and_lam_is_the_kept_area():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mb = sample_mix_box((14, 10), rng)
        y1, x1, y2, x2 = mb.box.tolist()
        assert mb.box.dtype == torch.int64
        assert 0 <= y1 <= y2 <= 14 and 0 <= x1 <= x2 <= 10
        assert mb.lam == 1.0 - (y2 - y1) * (x2 - x1) / 140


def test_box_is_deterministic_from_the_rng():
    a = [sample_mix_box((14, 14), np.random.default_rng(3)).box.tolist() for _ in range(2)]
    assert a[0] == a[1]
    # the reference's formula: cut = int(S * sqrt(1 - lam)), centre uniform, clipped
    rng = np.random.default_rng(3)
    lam = rng.beta(1.0, 1.0)
    cut = int(14 * np.sqrt(1 - lam))
    cy, cx = rng.integers(14), rng.integers(14)
    expected = [max(cy - cut // 2, 0), max(cx - cut // 2, 0), min(cy + cut // 2, 14), min(cx + cut // 2, 14)]
    assert a[0] == expected


def test_box_on_a_non_square_grid_follows_the_formula_per_axis():
    """Height and width are not interchangeable: cut sides, centre and clipping each use their own axis."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lam = rng.beta(1.0, 1.0)
        cut = np.sqrt(1 - lam)
        ch, cw = int(6 * cut), int(20 * cut)
        cy, cx = int(rng.integers(6)), int(rng.integers(20))
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, 6)
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, 20)
        mb = sample_mix_box((6, 20), np.random.default_rng(seed))
        assert mb.box.tolist() == [y1, x1, y2, x2]
        assert mb.lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / 120, abs=1e-12)


def test_mix_targets_mixes_class_and_ground_truth_not_tokens():
    g = torch.Generator().manual_seed(0)
    cls, gt, tokens = torch.rand(3, 4, generator=g), torch.rand(3, 4, generator=g), torch.rand(3, 5, 4, generator=g)
    mixed = mix_targets(Targets(cls, tokens, gt), 0.7)
    torch.testing.assert_close(mixed.cls, 0.7 * cls + 0.3 * cls.flip(0))
    torch.testing.assert_close(mixed.ground_truth, 0.7 * gt + 0.3 * gt.flip(0))
    assert torch.equal(mixed.tokens, tokens)  # the model un-mixes the token logits instead


def test_mix_class_target_values():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mixed = mix_class_target(t, 0.75)
    assert mixed.tolist() == [[0.875, 0.125], [0.0, 1.0], [0.625, 0.375]]  # sample i mixes with B-1-i


def test_unmixed_logits_with_own_targets_equal_mixed_logits_with_mixed_maps():
    """Training on the model's un-mixed token logits with each image's own targets gives the same loss as
    training on the mixed images' raw token logits against label maps mixed in the box.

    The raw logits come from the model's parts run on the mixed stem output (no un-mixing anywhere), so a model
    that forgot to un-mix, or a `mix_token_targets` that mixed the wrong tokens, makes the two losses differ."""
    torch.manual_seed(0)
    model = volo.create_model("volo_tiny", img_size=64, num_classes=6).train()
    with torch.no_grad():
        model.aux_head.weight.mul_(30)  # token logits far from uniform, so a wrongly paired token shows in the loss
    images = torch.randn(4, 3, 64, 64)
    g = torch.Generator().manual_seed(1)
    values = torch.randn(4, 3, 4, 4, generator=g).half()
    ids = torch.stack([torch.randperm(6, generator=g)[:3] for _ in range(64)]).reshape(4, 4, 4, 3).permute(0, 3, 1, 2)
    lt = torch.tensor([[[0.7, 0.1, 0.2], [-0.1, 0.6, 0.0]]]).repeat(4, 1, 1)
    targets = build_targets(Batch(images, torch.tensor([0, 1, 2, 3]), lt, values, ids), 6)
    box = torch.tensor([1, 0, 3, 3])
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 0:3] = True
    with torch.no_grad():
        out = model(images, mix_box=box)
        stem = model.forward_stem(images)
        pasted = torch.where(
            inside.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, :, :, None], stem.flip(0), stem
        )
        _, raw = model.forward_head_tokens(model.forward_tokens(pasted))  # as the mixed images were
    mixed_maps = mix_token_targets(targets.tokens, box, (4, 4))
    ours = soft_cross_entropy(out.token_logits, targets.tokens)
    direct = soft_cross_entropy(raw, mixed_maps)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    assert (
        abs(float(soft_cross_entropy(raw, targets.tokens)) - float(direct)) > 0.01
    )  # mixing the maps matters (300x the tolerance)
    # and token-by-token: token (1, 0) of image 0 is image 3's content, so its raw logits face image 3's target
    torch.testing.assert_close(mixed_maps[0, 4], targets.tokens[3, 4], atol=0, rtol=0)
    torch.testing.assert_close(mixed_maps[0, 0], targets.tokens[0, 0], atol=0, rtol=0)
    lam = 1 - 6 / 16
    loss = TokenLabelingLoss()(out, mix_targets(targets, lam))
    expected_cls = soft_cross_entropy(out.cls_logits, lam * targets.cls + (1 - lam) * targets.cls.flip(0))
    torch.testing.assert_close(loss.cls, expected_cls, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss.total, expected_cls + 0.5 * direct, atol=1e-5, rtol=1e-5)
