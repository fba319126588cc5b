"""NVIDIA DALI evaluation loader: the PyTorch path's `EvalTransform` as a DALI pipeline, every image exactly once.

Per image, as `volo.data.transforms.EvalTransform` does it: decode to RGB (greyscale and CMYK JPEGs converted, EXIF
orientation ignored as PIL's `load_rgb` ignores it), resize the short side to floor(img_size / crop_pct) and the
long side to floor(that x long / short) (torchvision's integer sizes, computed in the graph from
`fn.peek_image_shape`) with the model's interpolation, centre-crop img_size at torchvision's offset (round half to
even; padded with black when crop_pct > 1), normalise with the model's mean/std to (B, 3, S, S) float. Only the
resampling kernels differ (DALI's vs PIL's); `tests/test_dali_eval.py` measures how much.

Sharding is the PyTorch path's `ShardSampler`: rank r takes images r, r + W, r + 2W, ... of the sorted ImageFolder
scan (after the same `max_images` spread as `spread_subset`) and reads only that list, in order, with no padding:
the iterator's `LastBatchPolicy.PARTIAL` returns the short last batch as it is, so every image is evaluated once
over all ranks and the top-1 is over exactly N images. A rank with no image yields no batch.

`device=None` runs the pipeline on the CPU (`device_id=None`, as CI tests it); `device="cuda:N"` decodes with
nvJPEG ("mixed") and resizes, crops and normalises on GPU N, so the batches arrive on that GPU. Batches carry
identity `label_transform`s (evaluation builds no token targets). A file DALI cannot decode stops evaluation with a
`VoloError` naming it (the PyTorch loader warns and substitutes the next readable image instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from volo.data.batch import Batch, identity_transforms
from volo.data.dali_loader import parse_device, require_dali
from volo.data.loader_spec import LoaderOptions, scan_for
from volo.errors import VoloError

INTERPOLATIONS = {"bicubic": "INTERP_CUBIC", "bilinear": "INTERP_LINEAR"}
"""The model's interpolation (variants.py) -> DALI's `types.DALIInterpType` name (both antialiased when shrinking)."""
READ_OPS = ("readers.file", "peek_image_shape", "decoders.image")
"""The operators whose failures mean an unreadable file (anything else is a bug and propagates as it is)."""
PREFETCH = 2
"""Batches the pipeline prepares ahead (`prefetch_queue_depth`)."""


def require_dali_for_eval():
    """Import DALI or say how to install it (or how to evaluate without it)."""
    try:
        return require_dali()
    except VoloError:
        raise VoloError(
            "The DALI evaluation loader (--loader dali, or data.loader=dali in training) needs NVIDIA DALI: run "
            "`pip install nvidia-dali-cuda130` (or `pip install volo[dali]`), or evaluate with --loader pytorch."
        ) from None


def centre_offset(length, crop: int):
    """torchvision's centre-crop offset on DALI integer nodes: round((length - crop) / 2) with ties to even,
    and -((crop - length) // 2) (a pad) when the crop is longer than the side (`transforms._centre_offset`)."""
    diff = length - crop
    half = diff // 2  # DALI's // truncates towards zero (C); each branch is only kept where its operands are >= 0
    inside = half + (diff % 2) * (half % 2)  # k + 0.5 rounds to the even one of k, k + 1
    padded = -((crop - length) // 2)
    return inside * (diff >= 0) + padded * (diff < 0)


def build_eval_pipeline(
    files: list[str],
    img_size: int,
    crop_pct: float,
    interpolation: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int,
    device_id: int | None,
    workers: int,
):
    """The (not yet built) DALI pipeline over `files` in order; outputs "images" (B, 3, S, S) float and "index"."""
    dali = require_dali_for_eval()
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    scale_size = math.floor(img_size / crop_pct)

    @dali.pipeline_def
    def pipeline():
        jpegs, index = fn.readers.file(files=files, labels=list(range(len(files))), pad_last_batch=True, name="Reader")
        hwc = fn.peek_image_shape(jpegs, adjust_orientation=False)  # int64 (H, W, C)
        h, w = hwc[0], hwc[1]
        short = dmath.min(h, w)
        # torchvision: short side -> scale_size, long side -> int(scale_size * long / short), i.e. floor
        new_h, new_w = (h * scale_size) // short, (w * scale_size) // short
        images = fn.decoders.image(
            jpegs,
            device="cpu" if device_id is None else "mixed",
            output_type=types.RGB,
            adjust_orientation=False,
        )
        images = fn.resize(
            images,
            size=fn.cast(fn.stack(new_h, new_w), dtype=types.FLOAT),
            interp_type=getattr(types, INTERPOLATIONS[interpolation]),
            antialias=True,
        )
        start = fn.cast(fn.stack(centre_offset(new_h, img_size), centre_offset(new_w, img_size)), dtype=types.INT32)
        # torchvision pads a crop larger than the image with black (pixel 0), before normalising
        images = fn.slice(
            images, start, [img_size, img_size], axis_names="HW", out_of_bounds_policy="pad", fill_values=0
        )
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[255 * m for m in mean],
            std=[255 * s for s in std],
        )
        return images, index

    return pipeline(
        batch_size=batch_size,
        num_threads=max(1, workers),
        device_id=device_id,
        prefetch_queue_depth=PREFETCH,
    )


class DaliEvalLoader:
    """Iterable of `Batch` over this rank's strided share of an ImageFolder, each image once, the last batch short."""

    def __init__(
        self,
        root: str | Path,
        img_size: int,
        crop_pct: float,
        interpolation: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | None = None,
        workers: int = 4,
        max_images: int | None = None,
    ) -> None:
        require_dali_for_eval()
        if interpolation not in INTERPOLATIONS:
            raise VoloError(
                f"The DALI evaluation loader has no {interpolation!r} resize (it has {', '.join(INTERPOLATIONS)}); "
                "evaluate with --loader pytorch."
            )
        self.root = Path(root)
        scan = scan_for(LoaderOptions(root=self.root, max_images=max_images))  # spread_subset's very images
        self.classes = list(scan.classes)
        mine = scan.samples[rank::world_size]  # ShardSampler's share: r, r + W, r + 2W, ...
        self.files = [str(s.path) for s in mine]
        self.labels = torch.tensor([s.label for s in mine], dtype=torch.int64)
        """(n,) class index of each of this rank's images, in reading order."""
        self.batch_size = batch_size
        self.settings = dict(
            img_size=img_size,
            crop_pct=crop_pct,
            interpolation=interpolation,
            mean=mean,
            std=std,
            batch_size=batch_size,
            device_id=parse_device(device),
            workers=workers,
        )
        self._iterator = None
        self._unfinished = False  # a pass was left midway: its iterator is dropped, the next pass starts afresh
        self.last_indices = torch.empty(0, dtype=torch.int64)
        """(B,) positions in `self.files` of the batch yielded last; for tests and debugging."""

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.batch_size)

    def _make_iterator(self):
        if self._iterator is None:
            from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

            pipe = build_eval_pipeline(self.files, **self.settings)
            with self._unreadable_as_error(0):  # the iterator starts the pipeline (prefetches) as it is made
                self._iterator = DALIGenericIterator(
                    pipe,
                    ["images", "index"],
                    reader_name="Reader",
                    last_batch_policy=LastBatchPolicy.PARTIAL,
                    auto_reset=True,
                )
        return self._iterator

    def __iter__(self) -> Iterator[Batch]:
        if not self.files:  # more ranks than images: nothing to evaluate here
            return
        if self._unfinished:
            self._iterator = None
        iterator = self._make_iterator()
        self._unfinished = True
        position = 0
        while True:
            with self._unreadable_as_error(position):
                try:
                    out = next(iterator)[0]
                except StopIteration:  # auto_reset: the iterator is ready for the next evaluation
                    self._unfinished = False
                    return
            position += 1
            index = out["index"].flatten().to(torch.int64).cpu()
            self.last_indices = index
            images = out["images"]
            yield Batch(images, self.labels[index].to(images.device), identity_transforms(len(index)))

    @contextmanager
    def _unreadable_as_error(self, position: int):
        """A DALI failure to read or decode a file -> a one-line VoloError naming the file when it can be found."""
        try:
            yield
        except RuntimeError as err:
            text = str(err)
            if not any(f"fn.{op}`" in text for op in READ_OPS):
                raise
            self._iterator = None  # DALI says the pipeline is no longer valid
            lines = text.split("encountered:", 1)[-1].strip().splitlines()
            reason = lines[0] if lines else type(err).__name__
            # the failed batch is the requested one or one of the few the pipeline had prefetched
            window = self.files[position * self.batch_size : (position + PREFETCH + 1) * self.batch_size]
            bad = next((f for f in self.files if f in text), None) or first_unreadable(window)
            what = bad or f"one of {len(window)} images under {self.root} (from {window[0]})"
            raise VoloError(
                f"The DALI evaluation loader could not read {what} (DALI: {reason[:160]}); replace the file, or "
                "evaluate with --loader pytorch, which warns about unreadable files and goes on."
            ) from None


def first_unreadable(files: list[str]) -> str | None:
    """The first of `files` that PIL cannot decode either (the PyTorch path would skip it), or None."""
    from volo.data.dataset import DECODE_ERRORS
    from volo.data.decode import load_rgb

    for f in files:
        try:
            load_rgb(Path(f))
        except DECODE_ERRORS:
            return f
    return None
