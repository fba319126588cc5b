"""Image transforms that report where every output pixel came from (one affine per sample).

`TrainTransform`: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear or bicubic at random), horizontal flip,
RandAugment `rand-m9-mstd0.5-inc1` (spatial ops tracked), normalisation, random erasing p=0.25 (image only: the
erased pixels keep their label). `EvalTransform`: resize the short side to floor(size / crop_pct), centre crop,
bicubic. `WholeImageTransform`: the whole image squashed to size x size, as the label teacher sees it.

Each returns a `Transformed`: the (3, H, W) normalised tensor and the (2, 3) affine mapping normalised output
coordinates to normalised original-image coordinates (see `volo.data.affine` / `volo.data.batch`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms as T

from volo.data import affine
from volo.data.randaugment import RANDOM_INTERPOLATION, AlignedRandAugment, RandAugmentConfig, fill_colour
from volo.models.variants import IMAGENET_MEAN, IMAGENET_STD

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass
class Transformed:
    image: torch.Tensor
    """(3, H, W) float32, normalised."""
    label_transform: np.ndarray
    """(2, 3) float32: normalised output coords -> normalised original-image coords."""


@dataclass(frozen=True)
class TrainTransformConfig:
    """The training augmentation of the VOLO recipes."""

    img_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    """RandomResizedCrop area range, as a fraction of the image."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """RandomResizedCrop aspect-ratio range (width / height)."""
    interpolation: str = "random"
    """'random' (bilinear or bicubic per image, as timm), 'bilinear' or 'bicubic'."""
    hflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    """timm-style RandAugment spec (increasing op set); None or '' for none."""
    re_prob: float = 0.25
    """Random erasing probability (pixel mode: normal noise), on the image only."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def to_normalised_tensor(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 (x / 255 - mean) / std."""
    x = TF.pil_to_tensor(img).float().div_(255.0)
    return TF.normalize(x, list(mean), list(std), inplace=True)


class TrainTransform:
    def __init__(self, cfg: TrainTransformConfig = TrainTransformConfig()):
        self.cfg = cfg
        fill = fill_colour(cfg.mean)
        self.rand_augment = (
            AlignedRandAugment(RandAugmentConfig.parse(cfg.auto_augment), fill) if cfg.auto_augment else None
        )
        self.erasing = T.RandomErasing(p=cfg.re_prob, value="random") if cfg.re_prob > 0 else None

    def crop_box(self, img: Image.Image) -> tuple[int, int, int, int]:
        """RandomResizedCrop's box (left, top, right, bottom) in pixels (torchvision's sampler)."""
        top, left, h, w = T.RandomResizedCrop.get_params(img, list(self.cfg.scale), list(self.cfg.ratio))
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image, box: tuple[int, int, int, int] | None = None) -> Transformed:
        cfg = self.cfg
        box = box or self.crop_box(img)
        resample = (
            random.choice(RANDOM_INTERPOLATION) if cfg.interpolation == "random" else INTERPOLATIONS[cfg.interpolation]
        )
        matrix = affine.crop_resize(box, img.size)
        img = img.resize((cfg.img_size, cfg.img_size), resample, box=box)
        if random.random() < cfg.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            matrix = matrix @ affine.hflip()
        if self.rand_augment is not None:
            img, ra_matrix = self.rand_augment(img)
            matrix = matrix @ ra_matrix
        x = to_normalised_tensor(img, cfg.mean, cfg.std)
        if self.erasing is not None:
            x = self.erasing(x)
        return Transformed(x, affine.as_label_transform(matrix))


class EvalTransform:
    """Resize the short side to floor(img_size / crop_pct), centre-crop img_size (padding if crop_pct > 1)."""

    def __init__(
        self,
        img_size: int = 224,
        crop_pct: float = 0.96,
        interpolation: str = "bicubic",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        self.img_size, self.crop_pct, self.mean, self.std = img_size, crop_pct, mean, std
        self.interpolation = TF.InterpolationMode(interpolation)
        self.scale_size = math.floor(img_size / crop_pct)

    def __call__(self, img: Image.Image) -> Transformed:
        W, H = img.size
        resized = TF.resize(img, self.scale_size, interpolation=self.interpolation)
        cropped = TF.center_crop(resized, [self.img_size, self.img_size])
        Wr, Hr = resized.size
        left = _centre_offset(Wr, self.img_size)
        top = _centre_offset(Hr, self.img_size)
        sx, sy = W / Wr, H / Hr
        box = (left * sx, top * sy, (left + self.img_size) * sx, (top + self.img_size) * sy)
        matrix = affine.crop_resize(box, (W, H))
        return Transformed(to_normalised_tensor(cropped, self.mean, self.std), affine.as_label_transform(matrix))


def _centre_offset(length: int, crop: int) -> int:
    """torchvision's centre-crop offset along one side (negative: the crop is padded by that much)."""
    if crop > length:
        return -((crop - length) // 2)
    return int(round((length - crop) / 2.0))


class WholeImageTransform:
    """The whole image resized (squashed, no crop) to size x size: how a label teacher sees it."""

    def __init__(
        self,
        img_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        interpolation: str = "bicubic",
    ):
        self.img_size, self.mean, self.std = img_size, mean, std
        self.resample = INTERPOLATIONS[interpolation]

    def __call__(self, img: Image.Image) -> Transformed:
        img = img.resize((self.img_size, self.img_size), self.resample)
        return Transformed(to_normalised_tensor(img, self.mean, self.std), affine.as_label_transform(affine.identity()))
