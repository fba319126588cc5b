"""Top-1 / top-5 accuracy over a (possibly sharded) evaluation set; counts are summed over ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from volo.data.prefetch import DevicePrefetcher
from volo.distributed.process_group import all_reduce_sum


@dataclass
class EvalResult:
    top1: float
    """Percent of images whose true class is the top prediction."""
    top5: float
    """Percent of images whose true class is among the 5 top predictions (all classes when fewer than 5)."""
    loss: float
    """Mean cross-entropy of the eval logits."""
    images: int
    """Images evaluated over all ranks."""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `batches` (`Batch` objects: `.images` (B,3,H,W) and `.labels` (B,)).

    Each rank passes its shard; correct counts, loss sums and image counts are all-reduced, so the result is
    over the whole set on every rank.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss sum, images
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    for batch in DevicePrefetcher(batches, device):  # on CUDA the next batch's copy overlaps this one's forward
        images, labels = batch.images, batch.labels
        with autocast:
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == labels[:, None]
        totals[0] += hit[:, 0].sum()
        totals[1] += hit.any(dim=1).sum()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum").double()
        totals[3] += labels.numel()
    all_reduce_sum(totals)
    model.train(was_training)
    n = max(int(totals[3].item()), 1)
    c1, c5, loss_sum = (float(v) for v in totals[:3].tolist())
    return EvalResult(top1=100.0 * c1 / n, top5=100.0 * c5 / n, loss=loss_sum / n, images=int(totals[3].item()))
