"""Top-1 / top-5 pinned by the rank of the true class: one sample at each rank 1..7, so counting a rank-2 hit as
top-1, or a rank-6 hit as top-5, changes the result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from volo.data.batch import Batch, identity_transforms
from volo.training.evaluate import evaluate


class RowLogits(nn.Module):
    """Returns the stored logits row of each image (the image's first pixel is its row index)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()]


def test_each_rank_counts_exactly_once():
    K = 8
    scores = torch.arange(K, 0, -1, dtype=torch.float32)  # class c has rank c + 1
    logits, labels = [], []
    for rank in range(1, 8):  # sample r: the true class is ranked r-th
        perm = torch.randperm(K, generator=torch.Generator().manual_seed(rank))
        row = torch.empty(K)
        row[perm] = scores
        logits.append(row)
        labels.append(int(perm[rank - 1]))
    logits_t, labels_t = torch.stack(logits), torch.tensor(labels)
    ranks = (logits_t > logits_t.gather(1, labels_t[:, None])).sum(1) + 1
    assert ranks.tolist() == [1, 2, 3, 4, 5, 6, 7]
    images = torch.arange(7.0)[:, None, None, None].expand(7, 3, 16, 16)
    batches = [
        Batch(images[:3], labels_t[:3], identity_transforms(3)),
        Batch(images[3:], labels_t[3:], identity_transforms(4)),
    ]
    res = evaluate(RowLogits(logits_t), batches, torch.device("cpu"))
    assert res.images == 7
    assert res.top1 == pytest.approx(100 * 1 / 7)
    assert res.top5 == pytest.approx(100 * 5 / 7)
    assert res.loss == pytest.approx(nn.functional.cross_entropy(logits_t, labels_t).item(), rel=1e-6)
