"""nvJPEG training loader: batched `torchvision.io.decode_jpeg(..., device=...)` plus augmentation on that device.

For users without DALI. On `device="cuda"` torchvision decodes the whole batch with nvJPEG and every augmentation
runs on the GPU; on `device=None`/"cpu" the same code runs on the CPU (how it is tested here). File reading runs in
a thread pool one batch ahead. Non-JPEG files (PNG...) are decoded on the CPU and moved to the device.

Per image, in the PyTorch path's order (`volo.data.transforms.TrainTransform`): random resized crop (torchvision's
sampler: scale 0.08-1, ratio 3/4-4/3, 10 tries then a centre crop), resized with antialiased bilinear
`F.interpolate`; horizontal flip; RandAugment with timm's increasing op set (`volo.data.randaugment`: 2 ops drawn
with replacement, each applied with p=0.5, magnitude N(9, 0.5) clipped to [0, 10]) where the spatial ops are one
batched `F.grid_sample` per layer (bilinear, fill = the mean colour) whose matrix is tracked and the colour ops are
torchvision's tensor functions on uint8; normalisation; random erasing with probability `reprob`, batched on the
device (`volo.data.erasing`: the PyTorch path's torchvision sampler, image only, the label transform unchanged).

Order and sharding come from `ResumableDistributedSampler` (the PyTorch loader's sampler), so this backend sees the
same images per global step as the PyTorch path. The augmentation randomness of a batch, erasing included, is
seeded from (seed, global rank, epoch, step), so resuming from `state_dict()` reproduces the very same batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from volo.data import affine
from volo.data.affine import crop_affine, flip_affine, to_label_transform
from volo.data.batch import Batch
from volo.data.erasing import BatchErasing, erasing_seed
from volo.data.loader_spec import LoaderOptions, SamplerPosition, attach_token_labels, rank_seed, scan_for
from volo.data.randaugment import INCREASING_OPS, LEVEL_DENOM, SPATIAL_OPS, RandAugmentConfig, fill_colour
from volo.data.sampler import ResumableDistributedSampler
from volo.errors import VoloError

JPEG_MAGIC = b"\xff\xd8"


def sample_crop(height: int, width: int, scale, ratio, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params with our own RNG: (top, left, h, w) in pixels."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def colour_op(name: str, img: torch.Tensor, level: float) -> torch.Tensor:
    """One timm colour op on a (3, S, S) uint8 image; `level` in [-1, 1] (sign used by the enhance ops)."""
    if name == "AutoContrast":
        return TF.autocontrast(img)
    if name == "Equalize":
        return TF.equalize(img)
    if name == "Invert":
        return TF.invert(img)
    if name == "PosterizeIncreasing":
        bits = 4 - int(abs(level) * 4)  # 0 at magnitude 10: a black image, as on the PIL path
        return TF.posterize(img, bits) if bits > 0 else torch.zeros_like(img)
    if name == "SolarizeIncreasing":
        return TF.solarize(img, 256 - min(256, int(abs(level) * 256)))
    if name == "SolarizeAdd":
        add = min(128, int(abs(level) * 110))
        return torch.where(img < 128, (img.int() + add).clamp(max=255).to(torch.uint8), img)
    factor = max(0.1, 1.0 + level * 0.9)
    enhance = {
        "ColorIncreasing": TF.adjust_saturation,
        "ContrastIncreasing": TF.adjust_contrast,
        "BrightnessIncreasing": TF.adjust_brightness,
        "SharpnessIncreasing": TF.adjust_sharpness,
    }
    return enhance[name](img, factor)


def rand_augment(
    images: torch.Tensor, cfg: RandAugmentConfig, fill: torch.Tensor, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) float 0..255 -> augmented images and (B, 3, 3) float64 output->input normalised matrices.

    Works in place on `images` (each image gets one op per layer: a colour op writes its own row, the spatial ops
    read their rows before writing them back), so the caller hands over a batch it no longer needs."""
    B, size = images.shape[0], images.shape[-1]
    total = torch.eye(3, dtype=torch.float64).repeat(B, 1, 1)
    for _ in range(cfg.num_ops):
        layer = torch.eye(3, dtype=torch.float64).repeat(B, 1, 1)
        spatial = []
        for i in range(B):
            name = rng.choice(INCREASING_OPS)
            if rng.random() > cfg.prob:
                continue
            magnitude = rng.gauss(cfg.magnitude, cfg.magnitude_std) if cfg.magnitude_std > 0 else cfg.magnitude
            level = max(0.0, min(magnitude, LEVEL_DENOM)) / LEVEL_DENOM * (-1 if rng.random() > 0.5 else 1)
            if name in SPATIAL_OPS:
                coeffs = affine.spatial_coeffs(name, level, (size, size), cfg.translate_pct)
                layer[i] = torch.from_numpy(affine.from_pixel_affine(coeffs, (size, size)))
                spatial.append(i)
            else:
                pixels = images[i].round().clamp(0, 255).to(torch.uint8)
                images[i] = colour_op(name, pixels, level).float()
        if spatial:
            idx = torch.tensor(spatial, device=images.device)
            theta = layer[spatial, :2].to(images.device, torch.float32)
            grid = F.affine_grid(theta, [len(spatial), 3, size, size], align_corners=False)
            warped = F.grid_sample(images[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            ones = torch.ones_like(images[idx, :1])
            covered = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            images[idx] = warped + (1 - covered) * fill.view(1, 3, 1, 1)
        total = total @ layer
    return images, total


class NvJpegLoader(SamplerPosition):
    """Iterable of `Batch` decoded and augmented on `options.device`; same sampler as the PyTorch loader."""

    backend = "nvjpeg"

    def __init__(self, options: LoaderOptions) -> None:
        self.options = options
        self.device = torch.device(options.device or "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise VoloError(f"The nvJPEG loader was asked for device {options.device!r} but CUDA is not available.")
        self.images = scan_for(options)
        self.sampler = ResumableDistributedSampler(
            len(self.images),
            world_size=options.world_size,
            rank=options.rank,
            global_batch=options.world_size * options.batch_size,
            seed=options.seed,
        )
        self.rand_augment = RandAugmentConfig.parse(options.rand_augment) if options.rand_augment else None
        self.mean = torch.tensor(options.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(options.std, device=self.device).view(1, 3, 1, 1)
        self.fill = torch.tensor(fill_colour(options.mean), dtype=torch.float32, device=self.device)
        self.erasing = BatchErasing(options.reprob)
        self.last_indices = torch.empty(0, dtype=torch.int64)
        """(B,) sample indices (positions in `self.images`) of the batch yielded last; for tests and debugging."""

    def _read(self, indices: list[int]) -> list[torch.Tensor]:
        return [read_file(str(self.images.samples[i].path)) for i in indices]

    def __iter__(self) -> Iterator[Batch]:
        B, G = self.options.batch_size, self.sampler.global_batch
        order = list(self.sampler)
        batches = [order[k : k + B] for k in range(0, len(order) - B + 1, B)]
        with ThreadPoolExecutor(max_workers=max(1, self.options.workers)) as pool:
            pending = pool.submit(self._read, batches[0]) if batches else None
            for k, indices in enumerate(batches):
                data = pending.result()
                pending = pool.submit(self._read, batches[k + 1]) if k + 1 < len(batches) else None
                step = self.sampler.consumed // G
                batch = self._make_batch(indices, data, step)
                self.sampler.consumed += G
                yield batch
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        """(3, H, W) uint8 images on the device; JPEGs batched through decode_jpeg (nvJPEG on CUDA)."""
        jpeg = [i for i, d in enumerate(data) if bytes(d[:2].tolist()) == JPEG_MAGIC]
        out: list[torch.Tensor | None] = [None] * len(data)
        if jpeg:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=self.device)
            for i, img in zip(jpeg, decoded):
                out[i] = img
        for i, d in enumerate(data):
            if out[i] is None:
                out[i] = decode_image(d, mode=ImageReadMode.RGB).to(self.device)
        return out

    def _make_batch(self, indices: list[int], data: list[torch.Tensor], step: int) -> Batch:
        opts, size = self.options, self.options.img_size
        rng = random.Random(rank_seed(opts.seed, opts.rank) * 1_000_003 + self.sampler.epoch * 100_003 + step)
        images, crops, hw = [], [], []
        for img in self._decode(data):
            H, W = img.shape[-2:]
            top, left, h, w = sample_crop(H, W, opts.scale, opts.ratio, rng)
            crop = img[None, :, top : top + h, left : left + w].float()
            images.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
            crops.append((top, left, h, w))
            hw.append((H, W))
        x = torch.cat(images).clamp_(0, 255)
        flipped = torch.tensor([rng.random() < opts.hflip for _ in indices])
        x = torch.where(flipped.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        chain = [crop_affine(torch.tensor(crops), torch.tensor(hw)), flip_affine(flipped)]
        if self.rand_augment is not None:
            x, ra_matrix = rand_augment(x, self.rand_augment, self.fill, rng)
            chain.append(ra_matrix)
        x = (x / 255.0 - self.mean) / self.std
        x = self.erasing(x, erasing_seed(opts.seed, opts.rank, self.sampler.epoch, step))
        index = torch.tensor(indices, dtype=torch.int64)
        self.last_indices = index
        labels = torch.tensor([self.images.samples[i].label for i in indices], dtype=torch.int64, device=x.device)
        batch = Batch(images=x, labels=labels, label_transform=to_label_transform(*chain).to(x.device))
        if opts.token_labels is not None:
            attach_token_labels(batch, opts.token_labels, [self.images.samples[i].key for i in indices])
        return batch
