"""MixToken (VOLO): a CutMix box on the token grid, sampled on the host once per batch and passed to the model.

lam ~ Beta(1, 1); the box has sides int(S * sqrt(1 - lam)) and a uniform centre, clipped to the grid; lam is then
recomputed from the clipped area (the share of tokens that stay with their own image). The model pastes the box
from the reversed batch (sample i takes sample B-1-i) and un-mixes its token logits, so token targets need no
mixing; only the class target is mixed: `lam * t + (1 - lam) * t.flip(0)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from volo.data.targets import Targets


@dataclass
class MixBox:
    box: torch.Tensor
    """(4,) int64 [y1, x1, y2, x2) on the token grid, the model's `mix_box` input."""
    lam: float
    """Fraction of tokens outside the box (that keep their own image)."""


def sample_mix_box(grid: tuple[int, int], rng: np.random.Generator, alpha: float = 1.0) -> MixBox:
    """A MixToken box on an (S_h, S_w) token grid, lam ~ Beta(alpha, alpha), lam recomputed after clipping."""
    S_h, S_w = grid
    lam = rng.beta(alpha, alpha)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(S_h * cut), int(S_w * cut)
    cy, cx = int(rng.integers(S_h)), int(rng.integers(S_w))
    y1, y2 = int(np.clip(cy - cut_h // 2, 0, S_h)), int(np.clip(cy + cut_h // 2, 0, S_h))
    x1, x2 = int(np.clip(cx - cut_w // 2, 0, S_w)), int(np.clip(cx + cut_w // 2, 0, S_w))
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (S_h * S_w)
    return MixBox(torch.tensor([y1, x1, y2, x2], dtype=torch.int64), float(lam))


def mix_class_target(target: torch.Tensor, lam: float) -> torch.Tensor:
    """(B, K) -> lam * target + (1 - lam) * target.flip(0)."""
    return lam * target + (1.0 - lam) * target.flip(0)


def mix_targets(targets: Targets, lam: float) -> Targets:
    """Targets for a MixToken batch: class target and ground truth mixed, token targets as they are."""
    return Targets(mix_class_target(targets.cls, lam), targets.tokens, mix_class_target(targets.ground_truth, lam))


def mix_token_targets(tokens: torch.Tensor, box: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, K) targets of the MIXED images: tokens inside the box take sample B-1-i's target.

    What the targets would be without the model's un-mixing; used to prove the two views agree.
    """
    ys = torch.arange(grid[0], device=tokens.device)
    xs = torch.arange(grid[1], device=tokens.device)
    inside = ((ys >= box[0]) & (ys < box[2]))[:, None] & ((xs >= box[1]) & (xs < box[3]))[None, :]
    return torch.where(inside.reshape(1, -1, 1), tokens.flip(0), tokens)
