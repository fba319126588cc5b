"""What every training loader is given and what it offers, whatever the backend (pytorch | dali | nvjpeg).

All three yield `volo.data.batch.Batch` with one contract (see batch.py): normalised (B, 3, S, S) images, (B,)
int64 class labels, a (B, 2, 3) float32 `label_transform` mapping output-image coords to original-image coords
(F.affine_grid convention, align_corners=False, built from the geometry in `volo.data.affine`), and, with a
token-label source, the stored whole-image top-k maps.

Every loader object (`BatchLoader`) has `backend`, `__len__` (batches per epoch, equal on every rank),
`set_epoch(epoch)`, and `state_dict()` / `load_state_dict()` for its position inside the epoch (saved in training
checkpoints; `load_state_dict` also takes a backend-neutral `position(epoch, consumed)`). The dispatcher
`volo.data.backends.build_train_loader` imports the loaders; the loaders import this module, never the dispatcher.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from volo.data.batch import Batch
from volo.data.dataset import ImageFolderDataset, scan_image_folder, spread_indices
from volo.data.sampler import ResumableDistributedSampler
from volo.errors import VoloError
from volo.labeling.token_label import LabelSource

BACKENDS: tuple[str, ...] = ("pytorch", "dali", "nvjpeg")


@dataclass(frozen=True)
class Sample:
    """One training image: its file and its class index (classes are the sorted folder names)."""

    path: Path
    label: int
    key: str
    """Path relative to the ImageFolder root, POSIX form: how the token-label store names the image."""


@dataclass(frozen=True)
class ImageList:
    """An ImageFolder scan: classes and files sorted, so every rank and every backend sees one order."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)


def attach_token_labels(batch: Batch, source: LabelSource, keys: Sequence[str]) -> None:
    """Fill `batch.label_values` (B, k, h, w) float16 and `batch.label_ids` (B, k, h, w) int64 from the store."""
    if getattr(source, "crop_pct", None) is not None:
        raise VoloError(
            "Public-layout token labels cover a centre crop, which only data.loader=pytorch folds into the label "
            "geometry; use data.loader=pytorch, or token_labels.public_crop_pct=null to read them as whole-image maps."
        )
    labels = [source.get(key) for key in keys]
    device = batch.images.device
    batch.label_values = torch.from_numpy(np.stack([t.values for t in labels])).to(device, torch.float16)
    # the stored int16/int32 ids cross to the device, widened there (a quarter of the bytes over PCIe)
    batch.label_ids = torch.from_numpy(np.stack([t.ids for t in labels])).to(device).long()


@dataclass
class LoaderOptions:
    """The spec of a training loader (`volo.data.backends.build_train_loader`); each backend reads what it uses."""

    root: Path
    """Training split folder (root/<class>/<image>.jpg)."""
    backend: str = "pytorch"
    """pytorch (PIL in DataLoader workers), dali (NVIDIA DALI pipeline) or nvjpeg (torchvision decode + torch)."""
    img_size: int = 224
    """Output side S: images are (3, S, S)."""
    batch_size: int = 64
    """Images per rank per batch (micro-batch)."""
    accumulation: int = 1
    """Batches per optimiser step. pytorch cuts the epoch to whole steps (world_size x batch_size x accumulation
    images each); dali and nvjpeg cut it to whole batches and the trainer uses len // accumulation steps."""
    rank: int = 0
    """Global rank of this process (its shard of the data)."""
    world_size: int = 1
    """Number of ranks sharing the data."""
    seed: int = 0
    """Base seed; each backend derives a per-global-rank augmentation seed from it."""
    scale: tuple[float, float] = (0.08, 1.0)
    """Random-resized-crop area fraction range."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Random-resized-crop aspect-ratio (w/h) range."""
    hflip: float = 0.5
    """Horizontal flip probability."""
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    """timm-style RandAugment spec; "" turns it off."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    device: str | None = None
    """dali / nvjpeg: where decoding and augmentation run, None/"cpu" = CPU, "cuda"/"cuda:N" = GPU. pytorch: decodes
    on the CPU and copies each batch to this device one step ahead (`volo.data.prefetch`); None keeps it there."""
    workers: int = 4
    """PyTorch: DataLoader workers; DALI: pipeline threads; nvJPEG: file-reading threads."""
    max_images: int | None = None
    """Use only N images of the scan, spread over the classes (debug runs)."""
    reprob: float = 0.25
    """Random-erasing probability (pixel mode, after normalisation, image only); every backend applies it."""
    token_labels: LabelSource | None = field(default=None, repr=False)
    """The token-label store (`volo.labeling.source.open_label_store`); None gives batches without token labels."""
    dataset: ImageFolderDataset | None = field(default=None, repr=False)
    """`root` already scanned (and checked against the label store): its images are used instead of a new scan."""


class BatchLoader(Protocol):
    """What `volo.data.backends.build_train_loader` returns, whatever the backend."""

    backend: str

    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def scan_for(options: LoaderOptions) -> ImageList:
    """The images a loader trains on, in the PyTorch dataset's order and class numbering (`volo.data.dataset`).

    Images the label store could not read are left out (as the PyTorch path does), then `max_images` applies.
    """
    root = Path(options.root)
    if options.dataset is not None:
        classes, entries = options.dataset.classes, options.dataset.entries
    else:
        classes, entries, _ = scan_image_folder(root)
    skip = options.token_labels.unreadable() if options.token_labels is not None else set()
    samples = [Sample(root / e.key, e.label, e.key) for e in entries if e.key not in skip]
    samples = [samples[i] for i in spread_indices(len(samples), options.max_images)]
    return ImageList(root, tuple(classes), tuple(samples))


def position(epoch: int, consumed: int) -> dict:
    """A backend-neutral loader state: `consumed` images (over all ranks) of `epoch` are done. Every loader's
    `load_state_dict` takes it; the trainer gives it when the checkpoint has no position of this loader and world
    size (the sampler-driven loaders re-shard from there, DALI finishes the epoch in a fresh order)."""
    return {"epoch": epoch, "consumed": consumed}


def rank_seed(seed: int, rank: int) -> int:
    """A distinct 31-bit augmentation seed per (run seed, global rank); NVIDIA's examples repeat seeds per node."""
    return (seed * 1_000_003 + rank * 7919 + 12345) % (2**31 - 1)


def shard_length(num_samples: int, world_size: int) -> int:
    """Samples per rank after padding the last shard: ceil(N / world), the same on every rank."""
    return math.ceil(num_samples / world_size)


class SamplerPosition:
    """Length, epoch and resumable position of a loader driven by a `ResumableDistributedSampler` (`self.sampler`).

    Subclasses set `backend` (the name saved with the position, checked on resume).
    """

    backend: str
    sampler: ResumableDistributedSampler

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (keeps a resumed mid-epoch position when the epoch is the same)."""
        if epoch != self.sampler.epoch:
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"backend": self.backend, **self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """This loader's own `state_dict()`, or a `position(epoch, consumed)`."""
        if "backend" in state and state["backend"] != self.backend:
            raise VoloError(
                f"The checkpoint's loader state is from the {state.get('backend')!r} loader, not {self.backend!r}; "
                "resume with the same data.loader."
            )
        self.sampler.set_epoch(state["epoch"], state["consumed"])
