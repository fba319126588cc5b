"""The token-labeling loss against hand computations and torch's label-smoothed cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from volo.data.batch import Batch, identity_transforms
from volo.data.targets import Targets, build_targets
from volo.models.volo import VoloTrainOutput
from volo.training.loss import TokenLabelingLoss, blend_ground_truth, ground_truth_blend, soft_cross_entropy
from volo.training.mixtoken import mix_class_target, mix_targets


def test_plain_mode_equals_label_smoothed_cross_entropy():
    torch.manual_seed(0)
    B, N, K = 4, 9, 7
    labels = torch.tensor([0, 3, 6, 3])
    out = VoloTrainOutput(torch.randn(B, K), torch.randn(B, N, K))
    targets = build_targets(Batch(torch.zeros(B, 3, 48, 48), labels, identity_transforms(B)), K, smoothing=0.1)
    parts = TokenLabelingLoss(dense_weight=0.5)(out, targets)
    ce_cls = F.cross_entropy(out.cls_logits, labels, label_smoothing=0.1)
    ce_tok = F.cross_entropy(out.token_logits.reshape(B * N, K), labels.repeat_interleave(N), label_smoothing=0.1)
    torch.testing.assert_close(parts.cls, ce_cls, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(parts.tokens, ce_tok, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(parts.total, ce_cls + 0.5 * ce_tok, atol=1e-6, rtol=1e-6)


def test_soft_cross_entropy_exact():
    logits = torch.tensor([[0.0, 0.0]])
    assert abs(soft_cross_entropy(logits, torch.tensor([[0.3, 0.7]])).item() - 0.6931472) < 1e-6


def test_ground_truth_blend_ratios():
    teacher = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    gt = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])  # sample 0 agrees (class 0), sample 1 does not
    blended = ground_truth_blend(teacher, gt)
    torch.testing.assert_close(blended[0], 0.5 * teacher[0] + 0.5 * gt[0])
    torch.testing.assert_close(blended[1], 0.9 * teacher[1] + 0.1 * gt[1])


def test_ground_truth_option_changes_only_the_class_term():
    torch.manual_seed(1)
    out = VoloTrainOutput(torch.randn(2, 3), torch.randn(2, 4, 3))
    teacher = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    gt = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    tokens = torch.full((2, 4, 3), 1 / 3)
    plain = TokenLabelingLoss()(out, Targets(teacher, tokens, gt))
    blended = TokenLabelingLoss(ground_truth=True)(out, blend_ground_truth(Targets(teacher, tokens, gt)))
    torch.testing.assert_close(blended.tokens, plain.tokens, atol=0, rtol=0)
    torch.testing.assert_close(blended.cls, soft_cross_entropy(out.cls_logits, ground_truth_blend(teacher, gt)))
    assert blended.cls.item() != plain.cls.item()


def test_loss_backpropagates():
    out = VoloTrainOutput(torch.randn(2, 5, requires_grad=True), torch.randn(2, 4, 5, requires_grad=True))
    targets = Targets(torch.full((2, 5), 0.2), torch.full((2, 4, 5), 0.2), torch.full((2, 5), 0.2))
    TokenLabelingLoss()(out, targets).total.backward()
    assert out.cls_logits.grad is not None and out.token_logits.grad.abs().sum() > 0


def _reference_gt_class_target(teacher: torch.Tensor, gt: torch.Tensor, lam: float) -> torch.Tensor:
    """sail-sg's TokenLabelGTCrossEntropy, class part: ratio per sample, blend, then the MixToken mix."""
    ratio = (0.9 - 0.4 * (gt.max(-1)[1] == teacher.max(-1)[1])).unsqueeze(-1)
    t_cls = teacher * ratio + gt * (1 - ratio)
    return lam * t_cls + (1 - lam) * t_cls.flip(0)


def test_ground_truth_blends_per_sample_then_mixes_like_the_reference():
    """Sample 0: teacher and label agree (r 0.5); sample 1 is its MixToken partner and disagrees (r 0.9)."""
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    gt = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])
    lam = 0.6
    ours = mix_targets(blend_ground_truth(Targets(teacher, torch.zeros(2, 1, 3), gt)), lam).cls
    reference = _reference_gt_class_target(teacher, gt, lam)
    torch.testing.assert_close(ours, reference, atol=1e-7, rtol=0)
    mixed_first = ground_truth_blend(mix_class_target(teacher, lam), mix_class_target(gt, lam))
    assert (mixed_first - reference).abs().max() > 0.05  # the other order is measurably different here
