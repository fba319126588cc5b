"""Token-label targets and loss without the dense (B, N, K) target tensors: the fast path of `volo.data.targets`
+ `volo.training.loss`, with the same numbers (`tests/test_sparse_targets.py` checks the two against each other).

A token's target is `t = (1 - eps) * softmax(z) + eps / K`, where the teacher logits `z` (K classes) are zero
except at the few classes that the token's q x q sample points' 4 bilinear neighbour cells carry in their top-k:
at most L = q*q * 4 * k classes (80 for q=2, k=5), not K = 1000. So per token we keep only (class id, z) pairs,
duplicates merged (sort by id, then sum each run), unused slots (id 0, z 0) adding nothing. With the student logits
`y` (K), `lse = logsumexp(y)` and `U` the classes carried:

    sum_k exp(z_k) = K + sum_U (exp(z_j) - 1)          (every class outside U has z = 0)
    sum_k p_k y_k  = (sum_U (exp(z_j) - 1) y_j + sum_k y_k) / sum_k exp(z_k)
    CE(y, t)       = lse - (1 - eps) * sum_k p_k y_k - eps / K * sum_k y_k

(computed with every exp shifted by m = max(0, max_U z_j)). That reads `y` once per token and gathers L of its
entries: no (B, N, K) fp32 target, no softmax over it, no log_softmax of `y` to store. The class target stays dense
((B, K) is small): the mean of the token logits over the tokens, as `sample_topk_map`.

MixToken: lam is recomputed on the device from the box (as `sample_mix_box` does on the host), so a compiled step
takes the box as its only per-step input and never recompiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from volo.data.batch import Batch
from volo.data.targets import smooth_one_hot
from volo.models.volo import VoloTrainOutput
from volo.training.loss import LossParts, TokenLabelingLoss, ground_truth_blend, soft_cross_entropy


@dataclass
class SparseTargets:
    ids: torch.Tensor
    """(B, N, L) int64 class ids carried by each token (sorted; unused slots 0 with logit 0)."""
    logits: torch.Tensor
    """(B, N, L) float32 teacher logit z of each carried class (duplicates merged)."""
    cls: torch.Tensor
    """(B, K) soft class target (as `Targets.cls`)."""
    ground_truth: torch.Tensor
    """(B, K) smoothed one-hot of the image label."""
    smoothing: float


def token_entries(
    values: torch.Tensor, ids: torch.Tensor, label_transform: torch.Tensor, grid: tuple[int, int], supersample: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's (class id, weighted teacher logit) entries, duplicates not yet merged: (B, N, q*q*4*k) each.

    The sample points and bilinear weights of `sample_topk_map` (same clamping, same outside-the-image zeroing),
    divided by q*q so a token's entries sum to its averaged logits."""
    B, k, h, w = values.shape
    q = supersample
    S_h, S_w = grid
    points = F.affine_grid(label_transform.float(), [B, 1, S_h * q, S_w * q], align_corners=False)
    inside = (points.abs() <= 1.0).all(dim=-1).float()  # (B, S_h*q, S_w*q)
    u = (((points[..., 0] + 1) * w - 1) / 2).clamp(0, w - 1)
    v = (((points[..., 1] + 1) * h - 1) / 2).clamp(0, h - 1)
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    u0, v0 = u0.long(), v0.long()
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    scale = inside / (q * q)
    cells = torch.stack([v0 * w + u0, v0 * w + u1, v1 * w + u0, v1 * w + u1], dim=-1)  # (B, Hq, Wq, 4)
    weights = torch.stack([(1 - fv) * (1 - fu), (1 - fv) * fu, fv * (1 - fu), fv * fu], dim=-1) * scale[..., None]
    # regroup the points by token: (B, S_h, q, S_w, q, 4) -> (B, N, q*q*4)
    cells = cells.reshape(B, S_h, q, S_w, q, 4).permute(0, 1, 3, 2, 4, 5).reshape(B, S_h * S_w, q * q * 4)
    weights = weights.reshape(B, S_h, q, S_w, q, 4).permute(0, 1, 3, 2, 4, 5).reshape(B, S_h * S_w, q * q * 4)
    flat_values = values.float().flatten(2).transpose(1, 2)  # (B, h*w, k)
    flat_ids = ids.long().flatten(2).transpose(1, 2)
    index = cells.reshape(B, -1, 1).expand(B, cells.shape[1] * cells.shape[2], k)
    entry_values = flat_values.gather(1, index).reshape(B, S_h * S_w, -1) * weights.repeat_interleave(k, dim=2)
    entry_ids = flat_ids.gather(1, index).reshape(B, S_h * S_w, -1)
    return entry_ids, entry_values


def merge_duplicates(entry_ids: torch.Tensor, entry_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the values of equal ids along the last dim: (ids, values) of the distinct ids, left-aligned in id order,
    the remaining slots (id 0, value 0). Static shapes (compile- and CUDA-graph-friendly)."""
    ids, order = entry_ids.sort(dim=-1)
    values = entry_values.gather(-1, order)
    start = torch.ones_like(ids, dtype=torch.bool)
    start[..., 1:] = ids[..., 1:] != ids[..., :-1]
    slot = start.long().cumsum(-1) - 1  # run number of each entry
    merged = torch.zeros_like(values).scatter_add_(-1, slot, values)
    merged_ids = torch.zeros_like(ids).scatter_(-1, slot, ids)  # every entry of a run writes the same id
    return merged_ids, merged


def build_sparse_targets(
    batch: Batch, num_classes: int, smoothing: float = 0.1, supersample: int = 2, patch: int = 16
) -> SparseTargets:
    """`build_targets(batch, ...)` for a batch with token labels, with the token targets kept sparse."""
    B, _, H, W = batch.images.shape
    grid = (H // patch, W // patch)
    entry_ids, entry_values = token_entries(
        batch.label_values, batch.label_ids, batch.label_transform, grid, supersample
    )
    cls_logits = torch.zeros(B, num_classes, device=entry_values.device)
    cls_logits.scatter_add_(1, entry_ids.flatten(1), entry_values.flatten(1))
    cls_logits = cls_logits / (grid[0] * grid[1])
    ids, logits = merge_duplicates(entry_ids, entry_values)
    cls = cls_logits.softmax(dim=-1) * (1.0 - smoothing) + smoothing / num_classes
    return SparseTargets(ids, logits, cls, smooth_one_hot(batch.labels, num_classes, smoothing), smoothing)


def sparse_soft_cross_entropy(student: torch.Tensor, ids: torch.Tensor, z: torch.Tensor, smoothing: float):
    """Mean over tokens of CE(student, (1 - eps) * softmax(z) + eps / K), z sparse as (ids, z); student (B, N, K)."""
    y = student.float()
    K = y.shape[-1]
    lse = torch.logsumexp(y, dim=-1)
    sum_y = y.sum(dim=-1)
    m = z.amax(dim=-1).clamp(min=0.0)  # shift: every exp below is <= 1
    shifted_one = torch.exp(-m)
    extra = torch.exp(z - m[..., None]) - shifted_one[..., None]  # exp(z_j) - 1, shifted; 0 in unused slots
    total = K * shifted_one + extra.sum(dim=-1)
    expected_y = ((extra * y.gather(-1, ids)).sum(dim=-1) + shifted_one * sum_y) / total
    return (lse - (1.0 - smoothing) * expected_y - smoothing / K * sum_y).mean()


def mix_lam(box: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of tokens outside the MixToken box (`MixBox.lam`), on the box's device."""
    return 1.0 - ((box[2] - box[0]) * (box[3] - box[1])).float() / (grid[0] * grid[1])


def sparse_token_labeling_loss(
    output: VoloTrainOutput, targets: SparseTargets, loss_fn: TokenLabelingLoss, lam: torch.Tensor | None = None
) -> LossParts:
    """`loss_fn(output, mix_targets(targets, lam))` on sparse targets (lam None: no MixToken)."""
    t_cls = targets.cls
    if loss_fn.ground_truth:  # per sample, then mixed: the reference's order (see volo/training/loss.py)
        t_cls = ground_truth_blend(t_cls, targets.ground_truth)
    if lam is not None:
        t_cls = lam * t_cls + (1.0 - lam) * t_cls.flip(0)
    cls = soft_cross_entropy(output.cls_logits, t_cls)
    tokens = sparse_soft_cross_entropy(output.token_logits, targets.ids, targets.logits, targets.smoothing)
    return LossParts(loss_fn.cls_weight * cls + loss_fn.dense_weight * tokens, cls, tokens)
