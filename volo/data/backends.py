"""One entry point for every training-data path: `build_loader(backend, options)` with backend pytorch|dali|nvjpeg.

The options, the loader interface and the image scan are in `volo.data.loader_spec`, the geometry every backend
reports its augmentation with in `volo.data.affine`; this module only picks and builds a loader.
"""

from __future__ import annotations

from collections.abc import Iterator

from volo.data.batch import Batch
from volo.data.dataset import spread_indices
from volo.data.loader_spec import BACKENDS, BatchLoader, LoaderOptions, SamplerPosition
from volo.data.sampler import ResumableDistributedSampler
from volo.errors import VoloError

__all__ = ["BACKENDS", "BatchLoader", "LoaderOptions", "TorchLoader", "build_loader"]


class TorchLoader(SamplerPosition):
    """The reference path (`volo.data.loader`: PIL transforms in DataLoader workers) behind the common interface."""

    backend = "pytorch"

    def __init__(self, options: LoaderOptions) -> None:
        from volo.data.dataset import ImageFolderDataset
        from volo.data.loader import LoaderConfig
        from volo.data.loader import build_loader as build_torch_loader
        from volo.data.transforms import TrainTransform, TrainTransformConfig

        cfg = TrainTransformConfig(
            img_size=options.img_size,
            scale=options.scale,
            ratio=options.ratio,
            hflip=options.hflip,
            auto_augment=options.rand_augment or None,
            re_prob=options.reprob,
            mean=options.mean,
            std=options.std,
        )
        self.dataset = ImageFolderDataset(options.root, TrainTransform(cfg), labels=options.token_labels)
        if options.token_labels is not None:
            self.dataset.drop(options.token_labels.unreadable())
        entries = self.dataset.entries  # the same images as scan_for picks
        self.dataset.entries = [entries[i] for i in spread_indices(len(entries), options.max_images)]
        self.sampler = ResumableDistributedSampler(
            len(self.dataset),
            world_size=options.world_size,
            rank=options.rank,
            global_batch=options.world_size * options.batch_size,
            seed=options.seed,
        )
        self.loader = build_torch_loader(
            self.dataset, LoaderConfig(batch_size=options.batch_size, num_workers=options.workers), self.sampler
        )

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            self.sampler.consumed += self.sampler.global_batch
            yield batch
        self.sampler.set_epoch(self.sampler.epoch + 1)


def build_loader(backend: str, options: LoaderOptions) -> BatchLoader:
    """The training loader for `backend` (pytorch | dali | nvjpeg); all yield `Batch` with one contract."""
    if backend == "dali":
        from volo.data.dali_loader import DaliLoader

        return DaliLoader(options)
    if backend == "nvjpeg":
        from volo.data.nvjpeg_loader import NvJpegLoader

        return NvJpegLoader(options)
    if backend == "pytorch":
        return TorchLoader(options)
    raise VoloError(f"Unknown data loader backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
