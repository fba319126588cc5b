"""The reference training loader (data.loader=pytorch) behind the common interface (`volo.data.loader_spec`).

In the order it runs: the ImageFolder scan (`LoaderOptions.dataset`, or a new one), less the images the label store
could not read, `max_images` spread over the classes -> a `ResumableDistributedSampler` (this rank's share of each
global step) -> DataLoader workers (`volo.data.loader`) running the PIL `TrainTransform` per image and collating a
`Batch` -> copied to `options.device` one batch ahead (`DevicePrefetcher`). Its position inside the epoch is the
sampler's, counted in the batches handed out (not those read ahead).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace

import torch

from volo.data.batch import Batch
from volo.data.dataset import ImageEntry, ImageFolderDataset
from volo.data.loader import LoaderConfig, build_loader
from volo.data.loader_spec import LoaderOptions, SamplerPosition, scan_for
from volo.data.prefetch import DevicePrefetcher
from volo.data.sampler import ResumableDistributedSampler
from volo.data.transforms import TrainTransform, TrainTransformConfig


def worker_seed(seed: int, rank: int, epoch: int, consumed: int) -> int:
    """The DataLoader generator's seed for an epoch started after `consumed` images: its workers' random streams
    depend on where the epoch (re)starts, so a resumed epoch draws exactly what the uninterrupted one drew there."""
    return (seed * 1_000_003 + rank * 7919 + epoch * 104_729 + consumed) % (2**63 - 1)


class TorchLoader(SamplerPosition):
    """PIL transforms in DataLoader workers, ordered by a resumable sampler; batches of `options.batch_size`."""

    backend = "pytorch"

    def __init__(self, options: LoaderOptions) -> None:
        self.options = options
        transform = TrainTransform(
            TrainTransformConfig(
                img_size=options.img_size,
                scale=options.scale,
                ratio=options.ratio,
                hflip=options.hflip,
                auto_augment=options.rand_augment or None,
                re_prob=options.reprob,
                mean=options.mean,
                std=options.std,
            )
        )
        if options.dataset is not None:  # the caller's scan; a copy, so its own object keeps its images
            dataset = copy.copy(options.dataset)
            dataset.transform = transform
        else:
            dataset = ImageFolderDataset(options.root, transform)
        dataset.labels = options.token_labels
        images = scan_for(replace(options, dataset=dataset))
        dataset.entries = [ImageEntry(s.key, s.label) for s in images.samples]
        self.dataset = dataset
        self.sampler = ResumableDistributedSampler(
            len(dataset),
            world_size=options.world_size,
            rank=options.rank,
            global_batch=options.world_size * options.batch_size * options.accumulation,
            seed=options.seed,
        )
        self.loader = build_loader(
            dataset, LoaderConfig(batch_size=options.batch_size, num_workers=options.workers), self.sampler
        )
        self.device = torch.device(options.device) if options.device else None

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch * self.options.accumulation

    def __iter__(self) -> Iterator[Batch]:
        opts, sampler = self.options, self.sampler
        self.loader.generator = torch.Generator().manual_seed(
            worker_seed(opts.seed, opts.rank, sampler.epoch, sampler.consumed)
        )
        batches = DevicePrefetcher(self.loader, self.device) if self.device is not None else iter(self.loader)
        for batch in batches:
            sampler.consumed += opts.world_size * opts.batch_size
            yield batch
        sampler.set_epoch(sampler.epoch + 1)
