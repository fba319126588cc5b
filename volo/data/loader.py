"""The PyTorch data path: dataset + transform + any sampler -> DataLoader of `Batch`es."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from volo.data.batch import Batch
from volo.data.dataset import Sample
from volo.data.workers import cap_workers
from volo.training.signals import ignore_stop_signals, stop_signals_blocked


def collate_samples(samples: list[Sample]) -> Batch:
    """Stack samples into a Batch (label ids widened to int64, as the Batch contract says)."""
    with_labels = samples[0].label_values is not None
    return Batch(
        images=torch.stack([s.image for s in samples]),
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        label_transform=torch.stack([s.label_transform for s in samples]).float(),
        label_values=torch.stack([s.label_values for s in samples]) if with_labels else None,
        label_ids=torch.stack([s.label_ids for s in samples]).long() if with_labels else None,
    )


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 128
    """Images per batch on this process."""
    num_workers: int = 8
    """Decoding worker processes (0: decode in the main process)."""
    pin_memory: bool = True
    """Page-locked batches for asynchronous host-to-GPU copies (only used when CUDA is available)."""
    drop_last: bool = True
    """Drop the last incomplete batch (training); keep it for evaluation."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""


class _StopSafeDataLoader(DataLoader):
    """Starts its workers with the stop signals blocked (`volo.training.signals.stop_signals_blocked`)."""

    def _get_iterator(self):
        with stop_signals_blocked():
            return super()._get_iterator()


def build_loader(
    dataset: Dataset, cfg: LoaderConfig, sampler: Sampler | None = None, shuffle: bool = False
) -> DataLoader:
    """A DataLoader yielding `Batch`. Pass a (distributed, resumable) sampler for training; `shuffle` only
    applies without one. Workers persist across epochs."""
    workers = cap_workers(cfg.num_workers)  # at most the CPUs this process may use (torch warns beyond)
    return _StopSafeDataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=workers,
        collate_fn=collate_samples,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        drop_last=cfg.drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        # Slurm signals every process of a step: workers ignore SIGTERM/SIGINT/SIGUSR2, the trainer stops them
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
