"""RandAugment that reports its geometry: timm's `rand-m9-mstd0.5-inc1` op set, with each spatial op's affine.

The op set, magnitudes and probabilities follow timm's `rand_augment_transform` (increasing-severity ops, 2 ops per
image drawn with replacement, each applied with p=0.5, magnitude ~ N(m, mstd) clipped to [0, 10]). The colour ops
use the same PIL calls as timm; the spatial ops (Rotate, ShearX/Y, TranslateX/YRel) are applied with an explicit
PIL AFFINE matrix, which is also returned (as a 3x3 matrix in normalised output->input coordinates, see
`volo.data.affine`) so that the token-label map can follow the pixels. Randomness comes from Python's `random`,
which the DataLoader reseeds in every worker (timm draws its ops with numpy's global RNG, which it does not).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from volo.data import affine
from volo.errors import VoloError

LEVEL_DENOM = 10.0
RANDOM_INTERPOLATION = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)

INCREASING_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
SPATIAL_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})


def fill_colour(mean: tuple[float, float, float]) -> tuple[int, int, int]:
    """The 0-255 colour a geometric op fills uncovered pixels with: the dataset mean (every backend uses it)."""
    return tuple(round(255 * m) for m in mean)


@dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed `rand-m9-n2-mstd0.5-inc1` string."""

    magnitude: float = 9.0
    """Mean op strength on timm's 0..10 scale."""
    num_ops: int = 2
    """Ops drawn (with replacement) per image."""
    magnitude_std: float = 0.5
    """Std-dev of the per-op magnitude noise."""
    prob: float = 0.5
    """Probability each drawn op is applied."""
    translate_pct: float = 0.45
    """Largest translation, as a fraction of the image side."""

    @classmethod
    def parse(cls, spec: str) -> RandAugmentConfig:
        parts = spec.split("-")
        if parts[0] != "rand":
            raise VoloError(f"RandAugment spec {spec!r} must start with 'rand-' (e.g. 'rand-m9-mstd0.5-inc1').")
        values: dict = {}
        for part in parts[1:]:
            try:
                if part.startswith("mstd"):
                    values["magnitude_std"] = float(part[4:])
                elif part.startswith("inc"):
                    if part != "inc1":
                        raise VoloError(f"RandAugment spec {spec!r}: only the increasing op set ('inc1') is supported.")
                elif part.startswith("m"):
                    values["magnitude"] = float(part[1:])
                elif part.startswith("n"):
                    values["num_ops"] = int(part[1:])
                elif part.startswith("p"):
                    values["prob"] = float(part[1:])
                else:
                    raise VoloError(f"RandAugment spec {spec!r}: unknown part {part!r}; use m, n, mstd, p, inc1.")
            except ValueError as err:
                if isinstance(err, VoloError):
                    raise
                raise VoloError(f"RandAugment spec {spec!r}: cannot read a number in {part!r}.") from err
        if "inc1" not in parts:
            raise VoloError(f"RandAugment spec {spec!r}: add '-inc1'; only the increasing op set is supported.")
        return cls(**values)


def _negate(v: float) -> float:
    return -v if random.random() > 0.5 else v


def _pixel_affine(
    img: Image.Image, coeffs: tuple[float, ...], fill: tuple[int, int, int]
) -> tuple[Image.Image, np.ndarray]:
    out = img.transform(img.size, Image.Transform.AFFINE, coeffs, random.choice(RANDOM_INTERPOLATION), fillcolor=fill)
    return out, affine.from_pixel_affine(coeffs, img.size)


def _solarize_add(img: Image.Image, add: int, thresh: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * 3)


def _enhance(kind: type, level: float) -> Callable[[Image.Image], Image.Image]:
    factor = max(0.1, 1.0 + _negate(level / LEVEL_DENOM * 0.9))
    return lambda img: kind(img).enhance(factor)


def apply_op(
    name: str, img: Image.Image, magnitude: float, cfg: RandAugmentConfig, fill: tuple[int, int, int]
) -> tuple[Image.Image, np.ndarray | None]:
    """Apply one op at `magnitude`; returns the image and, for spatial ops, the (3, 3) output->input matrix."""
    level = magnitude / LEVEL_DENOM
    if name in SPATIAL_OPS:  # the warp's coefficients: `volo.data.affine.spatial_coeffs`, shared with nvJPEG
        return _pixel_affine(img, affine.spatial_coeffs(name, _negate(level), img.size, cfg.translate_pct), fill)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img), None
    if name == "Equalize":
        return ImageOps.equalize(img), None
    if name == "Invert":
        return ImageOps.invert(img), None
    if name == "PosterizeIncreasing":
        bits = 4 - int(level * 4)  # 0 at magnitude 10: older Pillow turned that into a black image
        return (ImageOps.posterize(img, bits) if bits > 0 else Image.new(img.mode, img.size)), None
    if name == "SolarizeIncreasing":
        return ImageOps.solarize(img, 256 - min(256, int(level * 256))), None
    if name == "SolarizeAdd":
        return _solarize_add(img, min(128, int(level * 110))), None
    enhancers = {
        "ColorIncreasing": ImageEnhance.Color,
        "ContrastIncreasing": ImageEnhance.Contrast,
        "BrightnessIncreasing": ImageEnhance.Brightness,
        "SharpnessIncreasing": ImageEnhance.Sharpness,
    }
    assert name in enhancers, name
    return _enhance(enhancers[name], magnitude)(img), None


class AlignedRandAugment:
    """`(PIL RGB image) -> (image, (3, 3) matrix)`: RandAugment plus the composed affine of its spatial ops."""

    def __init__(self, cfg: RandAugmentConfig, fill: tuple[int, int, int] = (124, 116, 104)):  # fill_colour(ImageNet)
        self.cfg = cfg
        self.fill = fill
        """Fill colour of uncovered pixels: the ImageNet mean in 0..255, as timm's train transform sets it."""

    def __call__(self, img: Image.Image) -> tuple[Image.Image, np.ndarray]:
        matrix = affine.identity()
        for name in random.choices(INCREASING_OPS, k=self.cfg.num_ops):
            if random.random() > self.cfg.prob:
                continue
            magnitude = self.cfg.magnitude
            if self.cfg.magnitude_std > 0:
                magnitude = random.gauss(magnitude, self.cfg.magnitude_std)
            magnitude = max(0.0, min(magnitude, LEVEL_DENOM))
            img, op_matrix = apply_op(name, img, magnitude, self.cfg, self.fill)
            if op_matrix is not None:
                matrix = matrix @ op_matrix
        return img, matrix
