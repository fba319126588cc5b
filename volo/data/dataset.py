"""A robust ImageFolder (`<root>/<class>/<image>`) that returns aligned samples, optionally with token labels.

Scanning: classes are the sorted sub-folder names that hold at least one image; non-image files and empty class
folders are counted and reported in one warning (an empty folder is NOT a class: the indices of the classes after
it shift, which the label-store check catches). Loading: an image that fails to decode (corrupt, truncated, beyond
`volo.data.decode`'s size bounds) is counted and, for training, replaced by the next readable one; evaluation
(`substitute=False`) never substitutes: it gets a placeholder sample with label `UNREADABLE` (-1), which
`evaluate` counts and leaves out of every score. When more than `max_bad_fraction` of the images tried so far in
this process were unreadable (after at least `min_tries`), loading stops with a VoloError.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from volo.data.decode import is_image_file, load_rgb
from volo.data.transforms import Transformed
from volo.errors import VoloError
from volo.labeling.public import fold_centre_crop
from volo.labeling.token_label import LabelSource

DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)
UNREADABLE = -1
"""The label of an evaluation sample whose image could not be decoded (its pixels are a black placeholder)."""


@dataclass
class ImageEntry:
    key: str
    """Path relative to the root, POSIX form: `<class>/<file>` (the label-store key)."""
    label: int


@dataclass
class ScanReport:
    images: int
    classes: int
    skipped_files: int
    """Files that are not images (by extension)."""
    empty_classes: list[str]


@dataclass
class Sample:
    """One transformed image with what its targets need (collated into `volo.data.batch.Batch`)."""

    image: torch.Tensor
    """(3, H, W) float32, normalised."""
    label: int
    label_transform: torch.Tensor
    """(2, 3) float32 output -> original normalised coords."""
    label_values: torch.Tensor | None = None
    """(k, h, w) float16 teacher logits over the whole image."""
    label_ids: torch.Tensor | None = None
    """(k, h, w) int16/int32 class ids."""
    index: int = -1
    """Index of the image actually returned (differs from the request when that one was unreadable)."""


def spread_indices(n: int, limit: int | None) -> list[int]:
    """`limit` of `n` class-sorted items spread evenly over them (never only the first classes); all when no limit."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def class_difference(a_name: str, a: list[str], b_name: str, b: list[str], limit: int = 5) -> str:
    """What differs between two class lists, e.g. "only in val: ['x']; only in train: ['y', 'z']"."""
    parts = []
    for name, mine, other in ((a_name, a, b), (b_name, b, a)):
        only = sorted(set(mine) - set(other))
        if only:
            more = f" and {len(only) - limit} more" if len(only) > limit else ""
            parts.append(f"only in {name}: {only[:limit]}{more}")
    return "; ".join(parts) or f"same names in another order ({a_name} {a[:limit]}, {b_name} {b[:limit]})"


def scan_image_folder(root: Path) -> tuple[list[str], list[ImageEntry], ScanReport]:
    """Sorted classes, entries and what was skipped. Raises VoloError when there is no image at all."""
    if not root.is_dir():
        raise VoloError(f"Dataset folder {root} does not exist; pass an ImageFolder root (<root>/<class>/<image>).")
    classes: list[str] = []
    entries: list[ImageEntry] = []
    skipped, empty = 0, []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        images = [p for p in files if is_image_file(p)]
        skipped += len(files) - len(images)
        if not images:
            empty.append(class_dir.name)
            continue
        label = len(classes)
        classes.append(class_dir.name)
        entries.extend(ImageEntry(p.relative_to(root).as_posix(), label) for p in images)
    if not entries:
        raise VoloError(f"No images found under {root}; expected <root>/<class>/<image>.jpg (or .png, ...).")
    report = ScanReport(len(entries), len(classes), skipped, empty)
    if skipped or empty:
        warnings.warn(
            f"{root}: skipped {skipped} non-image file(s) and {len(empty)} empty class folder(s)"
            + (f" ({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''})" if empty else "")
            + "; empty folders are not classes.",
            stacklevel=2,
        )
    return classes, entries, report


class ImageFolderDataset(Dataset):
    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Image.Image], Transformed] | None,
        labels: LabelSource | None = None,
        max_bad_fraction: float = 0.5,
        min_tries: int = 20,
        substitute: bool = True,
    ):
        self.root = Path(root)
        self.transform = transform
        self.classes, self.entries, self.report = scan_image_folder(self.root)
        self.labels = labels
        self.max_bad_fraction = max_bad_fraction
        self.min_tries = min_tries
        self.substitute = substitute
        """True: an unreadable image is replaced by the next readable one (training); False: label UNREADABLE."""
        self.tried = 0
        self.bad: list[str] = []
        """Keys of images that failed to decode in this process."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.entries)

    def drop(self, keys: set[str]) -> int:
        """Remove images by key (e.g. those the label generator could not read); returns how many."""
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.key not in keys]
        return before - len(self.entries)

    def load_image(self, index: int) -> Image.Image | None:
        """The RGB image, or None (counted, warned) when it cannot be decoded."""
        entry = self.entries[index]
        self.tried += 1
        try:
            return load_rgb(self.root / entry.key)
        except DECODE_ERRORS as err:
            self.bad.append(entry.key)
            if len(self.bad) <= 5 or len(self.bad) % 1000 == 0:
                warnings.warn(
                    f"Unreadable image {self.root / entry.key} ({type(err).__name__}: {err}); "
                    + ("using another one instead" if self.substitute else "not scored")
                    + f" ({len(self.bad)} unreadable so far in this process).",
                    stacklevel=2,
                )
            if self.tried >= self.min_tries and len(self.bad) > self.max_bad_fraction * self.tried:
                raise VoloError(
                    f"{len(self.bad)} of {self.tried} images read from {self.root} were unreadable (e.g. "
                    f"{self.bad[0]}); the dataset looks damaged: check the copy or re-extract it."
                ) from err
            return None

    def __getitem__(self, index: int) -> Sample:
        if not self.substitute:
            img = self.load_image(index)
            if img is not None:
                return self.make_sample(index, img)
            placeholder = self.make_sample(index, Image.new("RGB", (1, 1)))
            placeholder.label = UNREADABLE
            return placeholder
        for attempt in range(len(self.entries)):
            i = (index + attempt) % len(self.entries)
            img = self.load_image(i)
            if img is not None:
                return self.make_sample(i, img)
        raise VoloError(f"No image under {self.root} could be decoded.")

    def make_sample(self, i: int, img: Image.Image) -> Sample:
        entry = self.entries[i]
        out = self.transform(img)
        sample = Sample(out.image, entry.label, torch.from_numpy(np.asarray(out.label_transform)), index=i)
        crop_pct = getattr(self.labels, "crop_pct", None)  # public label files cover a centre crop (public.py)
        if crop_pct is not None:
            sample.label_transform = fold_centre_crop(sample.label_transform, img.width, img.height, crop_pct)
        if self.labels is not None:
            token_label = self.labels.get(entry.key)
            sample.label_values = torch.from_numpy(token_label.values)
            sample.label_ids = torch.from_numpy(token_label.ids)
        return sample
