"""Top-1 / top-5 accuracy over a (possibly sharded) evaluation set; counts are summed over ranks.

Under DDP every rank keeps its own BatchNorm running statistics (each normalises its own batches between DDP's
buffer broadcasts), while the exported weights are rank 0's. `share_rank0_buffers` copies rank 0's buffers to every
rank before an in-run evaluation, so its number is the one `volo eval` gives for the exported weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as tdist
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
    confusion: torch.Tensor | None = None
    """(K, K) int64 on the CPU when asked for: [true class, predicted class] image counts over all ranks."""
    class_names: list[str] | None = None
    """Model class index -> name, where the caller knows them (`volo eval`)."""
    unreadable: int = 0
    """Images that could not be decoded (label -1, `volo.data.dataset.UNREADABLE`): counted, never scored."""

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("confusion", "class_names")}

    def per_class_top1(self) -> list[float | None]:
        """Top-1 percent of each true class (None for a class with no images); needs `confusion`."""
        assert self.confusion is not None, "evaluate(..., confusion=True) records per-class counts"
        total = self.confusion.sum(dim=1)
        hits = self.confusion.diagonal()
        return [100.0 * int(h) / int(t) if int(t) else None for h, t in zip(hits, total)]


@torch.no_grad()
def share_rank0_buffers(model: nn.Module) -> None:
    """Broadcast rank 0's buffers (BatchNorm running mean/var, counters) to every rank; a no-op in one process."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return
    for buf in model.buffers():
        tdist.broadcast(buf, src=0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    confusion: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Run `model` in eval mode over `batches` (`Batch` objects: `.images` (B,3,H,W) and `.labels` (B,)).

    Each rank passes its shard; correct counts, loss sums and image counts are all-reduced, so the result is
    over the whole set on every rank. `confusion` also counts [true, predicted] pairs (`EvalResult.confusion`);
    `progress` shows a tqdm bar over this rank's batches. Samples labelled -1 (unreadable images) are counted
    apart and scored nowhere (no top-k hit can equal -1, the loss ignores them), with no host-device sync.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=device)  # correct1, correct5, loss sum, images, unreadable
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    pairs = None
    bar = None
    if progress:
        from tqdm import tqdm

        try:
            total = len(batches)
        except TypeError:  # a loader without a length
            total = None
        bar = tqdm(total=total, desc="eval", unit="batch", dynamic_ncols=True, leave=False)
    for batch in DevicePrefetcher(batches, device):  # on CUDA the next batch's copy overlaps this one's forward
        images, labels = batch.images, batch.labels
        with autocast:
            logits = model(images)
        logits = logits.float()
        if confusion:
            k_all = logits.shape[1]
            if pairs is None:
                pairs = torch.zeros(k_all * k_all, dtype=torch.int64, device=device)
            cell = torch.where(labels >= 0, labels * k_all + logits.argmax(dim=1), k_all * k_all)  # -1: spare bin
            pairs += torch.bincount(cell, minlength=k_all * k_all + 1)[: k_all * k_all]
        if bar is not None:
            bar.update(1)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == labels[:, None]
        totals[0] += hit[:, 0].sum()
        totals[1] += hit.any(dim=1).sum()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum", ignore_index=-1).double()
        totals[3] += (labels >= 0).sum()
        totals[4] += (labels < 0).sum()
    if bar is not None:
        bar.close()
    all_reduce_sum(totals)
    matrix = None
    if confusion:
        if pairs is None:  # this rank had no batch: still join the all-reduce with the model's class count
            k_all = int(getattr(model, "num_classes", 0) or 0)
            pairs = torch.zeros(k_all * k_all, dtype=torch.int64, device=device)
        k_all = int(round(pairs.numel() ** 0.5))
        matrix = all_reduce_sum(pairs).reshape(k_all, k_all).cpu()
    model.train(was_training)
    n = max(int(totals[3].item()), 1)
    c1, c5, loss_sum = (float(v) for v in totals[:3].tolist())
    top1, top5 = 100.0 * c1 / n, 100.0 * c5 / n
    images, unreadable = int(totals[3].item()), int(totals[4].item())
    return EvalResult(top1, top5, loss_sum / n, images, confusion=matrix, unreadable=unreadable)
