"""NVIDIA DALI training loader: decode (CPU or GPU "mixed"), random resized crop, flip, RandAugment, normalise.

Install with `pip install nvidia-dali-cuda130` (the `dali` extra). `options.device=None` runs the whole pipeline
on the CPU (`device_id=None`), which is how CI tests it; `device="cuda:N"` decodes with nvJPEG ("mixed") and
augments on GPU N.

Every random choice that moves pixels is made by a DALI random op whose value is also a pipeline output: the
crop window (`fn.random_crop_generator`, fed to `fn.decoders.image_slice`), the flip coin, and the forward matrix
of the geometric RandAugment operations (rotate, shear, translate; built with `fn.transforms.*`, applied once with
`fn.warp_affine`). The colour operations come from DALI's own augmentation suite with the geometric slots made
identities, so each RandAugment layer picks one operation from all 15 exactly as timm's does. The host side turns
the outputs into the (B, 2, 3) `label_transform` with the shared helpers in `volo.data.backends`. Random erasing
(`reprob`) runs on the pipeline's output batch, on its device, with torch (`volo.data.erasing`: the PyTorch path's
torchvision sampler, image only), its generator seeded from (seed, global rank, epoch, batch of the epoch).

Sharding: the reader shards the file list by global rank with `pad_last_batch=True` and reshuffles the whole list
every epoch with one seed shared by all ranks (`shuffle_after_epoch`), so shards stay disjoint and every rank has
`ceil(N / world) // batch` batches. Augmentation seeds are per global rank. The reader position is checkpointed
(`enable_checkpointing=True`): `state_dict()` returns the blob with the epoch and batch position, and a loader
given it resumes the exact order, augmentations and erasing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

from volo.data.affine import crop_affine, flip_affine, pixel_to_normalised, to_label_transform
from volo.data.batch import Batch
from volo.data.erasing import BatchErasing, erasing_seed
from volo.data.loader_spec import LoaderOptions, attach_token_labels, rank_seed, scan_for, shard_length
from volo.data.randaugment import RandAugmentConfig
from volo.errors import VoloError

OUTPUTS = ("images", "index", "image_hw", "crop_anchor", "crop_shape", "flip", "warp")
GEOMETRIC_OPS = ("translate_x", "translate_y", "shear_x", "shear_y", "rotate")
MAGNITUDE_BINS = 101  # magnitude on timm's 0..10 scale = bin / 10
MAX_ROTATE_DEG, MAX_SHEAR, MAX_TRANSLATE = 30.0, 0.3, 0.45  # timm's ranges (translate as a fraction of the side)


def require_dali():
    """Import DALI or say how to install it."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise VoloError(
            "The DALI loader needs NVIDIA DALI: run `pip install nvidia-dali-cuda130` (or `pip install volo[dali]`),"
            " or choose --set data.loader=pytorch (or nvjpeg)."
        ) from e
    return nvidia.dali


def parse_device(device: str | None) -> int | None:
    """None/"cpu" -> None (CPU-only pipeline); "cuda" -> 0; "cuda:N" -> N."""
    if device in (None, "cpu"):
        return None
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise VoloError(f"DALI loader device {device!r} is not understood; use None/'cpu', 'cuda' or 'cuda:N'.")


def _colour_suite():
    """DALI's RandAugment suite in timm's order, the geometric operations replaced by identities (done by the warp)."""
    from nvidia.dali.auto_aug import augmentations as a

    ident = a.identity
    return [
        ident,  # translate_x
        ident,  # translate_y
        ident,  # shear_x
        ident,  # shear_y
        ident,  # rotate
        a.brightness.augmentation((0, 0.9), True, a.shift_enhance_range),
        a.contrast.augmentation((0, 0.9), True, a.shift_enhance_range),
        a.color.augmentation((0, 0.9), True, a.shift_enhance_range),
        a.sharpness.augmentation((0, 0.9), True, a.sharpness_kernel),
        a.posterize.augmentation((8, 4), False, a.poster_mask_uint8),
        a.solarize.augmentation((256, 0)),
        a.solarize_add.augmentation((0, 110)),
        a.equalize,
        a.auto_contrast,
        a.invert,
    ]


def _rand_augment(images, spec: RandAugmentConfig, size: int):
    """Apply RandAugment to uint8 HWC images; returns (images, forward 2x3 warp matrix in pixel coords)."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath
    from nvidia.dali.auto_aug.core import signed_bin
    from nvidia.dali.auto_aug.core._select import select

    suite = _colour_suite()
    n_ops = len(suite)
    identity_idx = 0  # a geometric slot: identity for the colour pass, and its warp parameters are zero
    warps = []
    for _ in range(spec.num_ops):
        op = fn.random.uniform(values=list(range(n_ops)), dtype=types.INT32)
        keep = fn.random.coin_flip(probability=spec.prob, dtype=types.INT32)
        op = op * keep + identity_idx * (1 - keep)
        noise = fn.random.normal(dtype=types.FLOAT) * spec.magnitude_std
        mag = dmath.clamp(fn.cast(spec.magnitude + noise, dtype=types.FLOAT), 0.0, 10.0)
        mag_bin = dmath.clamp(fn.cast(mag * 10.0 + 0.5, dtype=types.INT32), 0, MAGNITUDE_BINS - 1)
        sign = fn.random.coin_flip(dtype=types.INT32)
        signed = mag / 10.0 * (1.0 - 2.0 * sign)  # in [-1, 1]

        def on(k, op=op):
            return fn.cast(op == k, dtype=types.FLOAT)

        tx = signed * MAX_TRANSLATE * size * on(0)
        ty = signed * MAX_TRANSLATE * size * on(1)
        sx = signed * MAX_SHEAR * on(2)
        sy = signed * MAX_SHEAR * on(3)
        angle = signed * MAX_ROTATE_DEG * on(4)
        warps += [
            fn.transforms.translation(offset=fn.stack(tx, ty)),
            fn.transforms.shear(shear=fn.stack(sx, sy), center=[size / 2, size / 2]),
            fn.transforms.rotation(angle=angle, center=[size / 2, size / 2]),
        ]
        images = select(
            suite,
            op,
            images,
            magnitude_bin=signed_bin(mag_bin, random_sign=sign),
            num_magnitude_bins=MAGNITUDE_BINS,
        )
    warp = fn.transforms.combine(*warps)
    # DALI takes one fill value for all channels: mid-grey, where the other paths use the mean colour (fill_colour)
    images = fn.warp_affine(images, matrix=warp, inverse_map=False, fill_value=128)
    return images, warp


def build_pipeline(options: LoaderOptions, files: list[str], checkpoint: bytes | None = None):
    """The DALI pipeline object (not yet built) for this rank; outputs are named in `OUTPUTS`."""
    dali = require_dali()
    from nvidia.dali import fn, types

    device_id = parse_device(options.device)
    spec = RandAugmentConfig.parse(options.rand_augment) if options.rand_augment else None
    size = options.img_size

    @dali.pipeline_def(enable_checkpointing=True, enable_conditionals=spec is not None)
    def pipeline():
        jpegs, index = fn.readers.file(
            files=files,
            labels=list(range(len(files))),
            shard_id=options.rank,
            num_shards=options.world_size,
            shuffle_after_epoch=True,
            shuffle_after_epoch_seed=options.seed,
            pad_last_batch=True,
            name="Reader",
        )
        image_hwc = fn.peek_image_shape(jpegs)
        anchor, shape = fn.random_crop_generator(
            image_hwc, random_area=list(options.scale), random_aspect_ratio=list(options.ratio)
        )
        images = fn.decoders.image_slice(
            jpegs, anchor, shape, axes=[0, 1], device="cpu" if device_id is None else "mixed", output_type=types.RGB
        )
        images = fn.resize(images, size=[size, size], antialias=True, interp_type=types.INTERP_LINEAR)
        if spec is not None:
            images, warp = _rand_augment(images, spec, size)
        else:
            warp = fn.transforms.translation(offset=[0.0, 0.0])
        flip = fn.random.coin_flip(probability=options.hflip, dtype=types.INT32)
        images = fn.crop_mirror_normalize(
            images,
            mirror=flip,
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[255 * m for m in options.mean],
            std=[255 * s for s in options.std],
        )
        return images, index, fn.slice(image_hwc, 0, 2, axes=[0]), anchor, shape, flip, warp

    return pipeline(
        batch_size=options.batch_size,
        num_threads=max(1, options.workers),
        device_id=device_id,
        seed=rank_seed(options.seed, options.rank),
        checkpoint=checkpoint,
        prefetch_queue_depth=2,
    )


class DaliLoader:
    """Iterable of `Batch` over this rank's shard, equal batch counts on every rank, resumable mid-epoch."""

    backend = "dali"

    def __init__(self, options: LoaderOptions) -> None:
        require_dali()
        self.options = options
        self.images = scan_for(options)
        if len(self.images) < options.world_size * options.batch_size:
            raise VoloError(
                f"{options.root} has {len(self.images)} images, fewer than world_size x batch_size ="
                f" {options.world_size * options.batch_size}; lower the batch size or add images."
            )
        self.labels = torch.tensor([s.label for s in self.images.samples], dtype=torch.int64)
        self._files = [str(s.path) for s in self.images.samples]
        self._checkpoint: bytes | None = None
        self._iterator = None
        self._epoch = 0
        self._position = 0  # batches already yielded in the current epoch
        self.erasing = BatchErasing(options.reprob)
        self.last_indices = torch.empty(0, dtype=torch.int64)
        """(B,) sample indices (positions in `self.images`) of the batch yielded last; for tests and debugging."""

    def __len__(self) -> int:
        return shard_length(len(self.images), self.options.world_size) // self.options.batch_size

    def set_epoch(self, epoch: int) -> None:
        """DALI reshuffles by itself after every epoch; the epoch is kept for the checkpoint and the erasing seed."""
        self._epoch = epoch

    def state_dict(self) -> dict:
        """The reader position (DALI's checkpoint blob) plus where in the epoch this loader stands."""
        blob = self._make_iterator().checkpoints()[0]
        return {"backend": "dali", "dali_checkpoint": blob, "epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        """This loader's own `state_dict()`, or a `loader_spec.position(epoch, consumed)`: DALI cannot start its
        order mid-epoch from an image count, so the epoch goes on for its remaining batches in a fresh order."""
        if "backend" not in state:
            o = self.options
            warnings.warn(
                f"No DALI reader position was saved for rank {o.rank} of {o.world_size} (another loader or world "
                f"size wrote the checkpoint): epoch {state['epoch']} goes on for its remaining steps in a fresh DALI "
                "order.",
                stacklevel=2,
            )
            consumed = state["consumed"] // (o.world_size * o.batch_size)
            state = {"backend": "dali", "dali_checkpoint": None, "epoch": state["epoch"], "position": consumed}
        if state["backend"] != "dali":
            raise VoloError(
                "The checkpoint's loader state is not from the DALI loader; resume with the same data.loader."
            )
        self._checkpoint = state["dali_checkpoint"]
        self._epoch, self._position = state["epoch"], state["position"]
        self._iterator = None  # rebuilt from the blob on the next iteration

    def _make_iterator(self):
        if self._iterator is None:
            from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

            with warnings.catch_warnings():  # DALI's own RandAugment suite uses its deprecated experimental aliases
                warnings.simplefilter("ignore", DeprecationWarning)
                pipe = build_pipeline(self.options, self._files, self._checkpoint)
                self._iterator = DALIGenericIterator(
                    pipe, list(OUTPUTS), reader_name="Reader", last_batch_policy=LastBatchPolicy.DROP, auto_reset=False
                )
        return self._iterator

    def __iter__(self) -> Iterator[Batch]:
        iterator = self._make_iterator()
        while self._position < len(self):
            try:
                outputs = next(iterator)[0]
            except StopIteration:
                break
            seed = erasing_seed(self.options.seed, self.options.rank, self._epoch, self._position)
            self._position += 1
            yield self._to_batch(outputs, seed)
        iterator.reset()
        self._position = 0
        self._epoch += 1

    def _to_batch(self, out: dict[str, torch.Tensor], seed: int) -> Batch:
        """DALI outputs -> Batch; label_transform = crop . warp^-1 . mirror (output coords -> original coords)."""
        index = out["index"].flatten().to(torch.int64).cpu()
        self.last_indices = index
        size = self.options.img_size
        crops = torch.cat([out["crop_anchor"], out["crop_shape"]], dim=1).cpu()  # (B, 4) y, x, h, w
        forward = torch.eye(3, dtype=torch.float64).repeat(len(index), 1, 1)
        forward[:, :2] = out["warp"].cpu().reshape(-1, 2, 3).to(torch.float64)
        transform = to_label_transform(
            crop_affine(crops, out["image_hw"].cpu()),
            pixel_to_normalised(torch.linalg.inv(forward), size),
            flip_affine(out["flip"].cpu()),
        )
        images = self.erasing(out["images"], seed)
        batch = Batch(images=images, labels=self.labels[index].to(images.device), label_transform=transform)
        if self.options.token_labels is not None:
            attach_token_labels(batch, self.options.token_labels, [self.images.samples[i].key for i in index.tolist()])
        return batch
