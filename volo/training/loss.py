"""The token-labeling loss: soft-target CE on the class head plus dense_weight x mean token CE on the aux head.

    L = CE(cls_logits, t_cls) + dense_weight * mean over all B*N tokens of CE(token_logits, t_token)

with CE(z, t) = -sum_k t_k log_softmax(z)_k. dense_weight is 0.5 for VOLO.

Fine-tuning 'ground truth' option (the reference's TokenLabelGTCrossEntropy): each sample's class target becomes
`r * teacher + (1 - r) * ground_truth`, where ground_truth is the smoothed one-hot of its own dataset label and
r = 0.5 when the teacher's top class equals the label, 0.9 when they differ. So when teacher and label agree the
target is an even blend; when they disagree the teacher still dominates (0.9). Token targets are not blended.
Order, as the reference: blend per sample first (`blend_ground_truth`, on the unmixed targets), then MixToken mixes
the blended class targets (`train_step` does both). Mixing first and blending the mixtures differs whenever a
sample and its partner disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from volo.data.targets import Targets
from volo.models.volo import VoloTrainOutput


@dataclass
class LossParts:
    total: torch.Tensor
    """Scalar: cls + dense_weight * tokens."""
    cls: torch.Tensor
    """Scalar class-head CE."""
    tokens: torch.Tensor
    """Scalar mean token CE (before dense_weight)."""


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over leading dims of -sum(target * log_softmax(logits)); logits and target (..., K)."""
    return -(target * logits.float().log_softmax(dim=-1)).sum(dim=-1).mean()


def ground_truth_blend(teacher: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """(B, K): r * teacher + (1 - r) * ground_truth, r = 0.5 where the argmaxes agree, else 0.9."""
    agree = teacher.argmax(dim=-1) == ground_truth.argmax(dim=-1)
    r = torch.where(agree, 0.5, 0.9).to(teacher.dtype)[:, None]
    return r * teacher + (1.0 - r) * ground_truth


def blend_ground_truth(targets: Targets) -> Targets:
    """Unmixed targets with the 'ground truth' class blend applied per sample (mix them afterwards)."""
    return Targets(ground_truth_blend(targets.cls, targets.ground_truth), targets.tokens, targets.ground_truth)


class TokenLabelingLoss(nn.Module):
    def __init__(self, dense_weight: float = 0.5, cls_weight: float = 1.0, ground_truth: bool = False):
        super().__init__()
        self.dense_weight = dense_weight
        self.cls_weight = cls_weight
        self.ground_truth = ground_truth
        """The step blends the class targets with `blend_ground_truth` before mixing them (the loss takes them
        as they come)."""

    def forward(self, output: VoloTrainOutput, targets: Targets) -> LossParts:
        cls = soft_cross_entropy(output.cls_logits, targets.cls)
        tokens = soft_cross_entropy(output.token_logits, targets.tokens)
        return LossParts(self.cls_weight * cls + self.dense_weight * tokens, cls, tokens)
