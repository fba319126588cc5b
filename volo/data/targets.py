"""Per-token and class targets from a `Batch`, built batched on the training device.

Token-label mode (the batch carries teacher top-k maps over the whole image):
  1. scatter the top-k logits into a dense (B, K, h, w) map, zeros elsewhere (as the reference);
  2. sample it through each image's `label_transform` at q x q points per token of the S x S token grid
     (`F.affine_grid` + bilinear `F.grid_sample`, align_corners=False; q=2 by default), and average the q x q
     logits of each token (the RoIAlign of the reference, on our affine instead of an axis-aligned box); the class
     target averages all S*q x S*q points, i.e. the whole output image;
  3. points that fall outside the original image (rotation corners, crop_pct > 1 borders) contribute zero logits;
     points inside but within half a label cell of the border take the border cell (no zero padding bleeding in);
  4. softmax over classes, then label smoothing: t = (1 - eps) * p + eps / K.
Plain mode (no label store): the class and every token get the smoothed one-hot of the image label
(on = 1 - eps + eps/K, off = eps/K).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from volo.data.batch import Batch
from volo.errors import VoloError


@dataclass
class Targets:
    cls: torch.Tensor
    """(B, K) soft class target (rows sum to 1)."""
    tokens: torch.Tensor
    """(B, N, K) soft token targets, N = S_h * S_w in row-major order like the model's tokens."""
    ground_truth: torch.Tensor
    """(B, K) smoothed one-hot of the image label (for the fine-tuning 'ground truth' blend)."""


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.1) -> torch.Tensor:
    """(B,) int64 -> (B, K) float32 with on = 1 - eps + eps/K, off = eps/K."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def check_label_ids(ids: torch.Tensor, num_classes: int) -> None:
    """Refuse class ids outside [0, num_classes): the dense path would fail on them and the sparse path would add
    them to the next token's row. Sync-free on CUDA (an asynchronous device assert); a VoloError on the CPU."""
    in_range = (ids.min() >= 0) & (ids.max() < num_classes)
    if ids.is_cuda:
        torch._assert_async(in_range, "token-label class id outside [0, num_classes)")
    elif not bool(in_range):
        raise VoloError(
            f"Token-label class ids span [{int(ids.min())}, {int(ids.max())}] but the model has {num_classes} "
            "classes; the labels were made for another class set: use the store made for this dataset."
        )


def dense_label_map(values: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, k, h, w) top-k logits and ids -> (B, K, h, w) float32 logits, zero where a class is not in the top-k."""
    B, _, h, w = values.shape
    dense = torch.zeros(B, num_classes, h, w, device=values.device, dtype=torch.float32)
    return dense.scatter_(1, ids.long(), values.float())


def sample_label_map(
    dense: torch.Tensor, label_transform: torch.Tensor, grid: tuple[int, int], supersample: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the dense map's logits over each token of the output image, and over the whole output.

    dense (B, K, h, w); label_transform (B, 2, 3); grid (S_h, S_w). Returns token logits (B, K, S_h, S_w) and
    class logits (B, K).
    """
    B, K = dense.shape[:2]
    q = supersample
    points = F.affine_grid(label_transform.float(), [B, K, grid[0] * q, grid[1] * q], align_corners=False)
    sampled = F.grid_sample(dense, points, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (points.abs() <= 1.0).all(dim=-1)  # (B, S_h*q, S_w*q)
    sampled = sampled * inside[:, None].to(sampled.dtype)
    return F.avg_pool2d(sampled, q), sampled.mean(dim=(2, 3))


def sample_topk_map(
    values: torch.Tensor,
    ids: torch.Tensor,
    num_classes: int,
    label_transform: torch.Tensor,
    grid: tuple[int, int],
    supersample: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same numbers as `sample_label_map(dense_label_map(...))`, without building the dense map.

    Bilinear sampling is linear in the map, so each sample point adds its 4 neighbour cells' top-k logits, with
    the bilinear weights, straight into its token's (B, N, K) row (one scatter-add); the class logits are the mean
    of the token logits (every token has q*q points). Cost O(B * N * q^2 * 4 * k) instead of O(B * K * N * q^2).
    Returns token logits (B, K, S_h, S_w) and class logits (B, K).
    """
    B, k, h, w = values.shape
    q = supersample
    S_h, S_w = grid
    points = F.affine_grid(label_transform.float(), [B, 1, S_h * q, S_w * q], align_corners=False)
    inside = (points.abs() <= 1.0).all(dim=-1).flatten(1).float()  # (B, P)
    # grid_sample's align_corners=False source index, clamped like padding_mode='border'
    u = (((points[..., 0] + 1) * w - 1) / 2).clamp(0, w - 1).flatten(1)  # (B, P)
    v = (((points[..., 1] + 1) * h - 1) / 2).clamp(0, h - 1).flatten(1)
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    u0, v0 = u0.long(), v0.long()
    u1, v1 = (u0 + 1).clamp(max=w - 1), (v0 + 1).clamp(max=h - 1)
    P = points.shape[1] * points.shape[2]
    rows = torch.arange(S_h * q, device=values.device) // q
    cols = torch.arange(S_w * q, device=values.device) // q
    token = (rows[:, None] * S_w + cols[None, :]).flatten()  # (P,) token of each point
    flat_values = values.float().flatten(2)  # (B, k, h*w)
    flat_ids = ids.long().flatten(2)
    out = torch.zeros(B, S_h * S_w * num_classes, device=values.device)
    for cell_v, cell_u, weight in (
        (v0, u0, (1 - fv) * (1 - fu)),
        (v0, u1, (1 - fv) * fu),
        (v1, u0, fv * (1 - fu)),
        (v1, u1, fv * fu),
    ):
        cell = (cell_v * w + cell_u)[:, None, :].expand(B, k, P)
        src = flat_values.gather(2, cell) * (weight * inside)[:, None, :]  # (B, k, P)
        index = token[None, None, :] * num_classes + flat_ids.gather(2, cell)
        out.scatter_add_(1, index.flatten(1), src.flatten(1))
    tokens = out.reshape(B, S_h, S_w, num_classes).permute(0, 3, 1, 2) / (q * q)
    return tokens, tokens.mean(dim=(2, 3))


def build_targets(
    batch: Batch,
    num_classes: int,
    smoothing: float = 0.1,
    supersample: int = 2,
    patch: int = 16,
    method: str = "auto",
) -> Targets:
    """Targets for `batch` (already on the training device); the token grid is images (H/patch, W/patch).

    `method`: 'sparse' (scatter-add of the top-k, fast), 'dense' (the reference path: dense map + grid_sample,
    deterministic), or 'auto' (sparse unless torch's deterministic algorithms are on).
    """
    B, _, H, W = batch.images.shape
    grid = (H // patch, W // patch)
    ground_truth = smooth_one_hot(batch.labels, num_classes, smoothing)
    if not batch.has_token_labels:
        tokens = ground_truth[:, None, :].expand(B, grid[0] * grid[1], num_classes)
        return Targets(ground_truth, tokens, ground_truth)
    check_label_ids(batch.label_ids, num_classes)
    if method == "auto":
        method = "dense" if torch.are_deterministic_algorithms_enabled() else "sparse"
    if method == "sparse":
        token_logits, cls_logits = sample_topk_map(
            batch.label_values, batch.label_ids, num_classes, batch.label_transform, grid, supersample
        )
    else:
        dense = dense_label_map(batch.label_values, batch.label_ids, num_classes)
        token_logits, cls_logits = sample_label_map(dense, batch.label_transform, grid, supersample)
    off = smoothing / num_classes
    tokens = token_logits.flatten(2).transpose(1, 2).softmax(dim=-1) * (1.0 - smoothing) + off
    cls = cls_logits.softmax(dim=-1) * (1.0 - smoothing) + off
    return Targets(cls, tokens, ground_truth)
