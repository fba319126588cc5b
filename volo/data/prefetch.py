"""Overlap the host-to-device copy of the next batch with the current step's compute.

`DevicePrefetcher(batches, device)` yields the same batches, in the same order, already on `device`. On CUDA it
keeps one batch in flight: batch i+1 is copied (pinned memory, `non_blocking`) on a side stream while step i runs
on the compute stream; the compute stream waits for that copy only when it takes the batch, and the tensors are
recorded on the compute stream so the caching allocator never reuses their memory early. On any other device it
is a plain `Batch.to`, so CPU runs and tests see the exact same batches.

In training the PyTorch loader (`volo.data.torch_loader`) wraps its DataLoader in it and counts its position in
the batches it hands out, so the read-ahead never shifts a saved position; DALI and nvJPEG hand out batches on the
GPU already (their own pipelines overlap decoding). Evaluation (`volo.training.evaluate`) uses it for every
loader: batches already on the device pass through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from volo.data.batch import Batch


class DevicePrefetcher:
    """Iterate `batches` with each one already on `device`; on CUDA the next copy overlaps the current step."""

    def __init__(self, batches: Iterable[Batch], device: torch.device | str) -> None:
        self.source: Iterator[Batch] = iter(batches)
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._next: Batch | None = None
        self._done = False
        if self.stream is not None:
            self._preload()

    def _preload(self) -> None:
        try:
            batch = next(self.source)
        except StopIteration:
            self._next, self._done = None, True
            return
        with torch.cuda.stream(self.stream):
            self._next = batch.to(self.device, non_blocking=True)

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> Batch:
        if self.stream is None:
            return next(self.source).to(self.device)
        if self._done:
            raise StopIteration
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self.stream)
        batch = self._next
        for t in batch.tensors():
            t.record_stream(compute)
        self._preload()
        return batch
