"""A small ImageFolder of real JPEG files for tests and the built-in demo, deterministic from a seed.

Class c draws shape `SHAPES[c % 6]` in its own hue, at a random off-centre position and size, on a varied
background (a random two-colour gradient plus noise texture), so that crops matter: a crop may miss the object.
Image sizes vary (and are not square) so aspect handling is exercised.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross", "ring", "stripes")


@dataclass
class SyntheticDataset:
    root: Path
    classes: list[str]
    images: int


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0.0, 1.0, h)[:, None, None]
    grad = c0 * (1 - t) + c1 * t
    noise = rng.normal(0.0, 18.0, (h, w, 3))
    return Image.fromarray(np.clip(np.broadcast_to(grad, (h, w, 3)) + noise, 0, 255).astype(np.uint8))


def class_colour(c: int, classes: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(c / max(classes, 1), 0.9, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        tw, th = (x1 - x0) // 3, (y1 - y0) // 3
        draw.rectangle((x0 + tw, y0, x1 - tw, y1), fill=colour)
        draw.rectangle((x0, y0 + th, x1, y1 - th), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, (x1 - x0) // 6))
    else:
        step = max(2, (x1 - x0) // 6)
        for x in range(x0, x1, 2 * step):
            draw.rectangle((x, y0, min(x + step, x1), y1), fill=colour)


def make_synthetic_dataset(
    root: str | Path, classes: int = 4, per_class: int = 8, size: int = 96, seed: int = 0, quality: int = 90
) -> SyntheticDataset:
    """Write `classes` x `per_class` JPEGs to `<root>/class_XX/img_YYYY.jpg`; sizes vary around `size`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"class_{c:02d}" for c in range(classes)]
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w = int(size * rng.uniform(0.8, 1.4))
            h = int(size * rng.uniform(0.8, 1.4))
            img = _background(rng, w, h)
            side = int(min(w, h) * rng.uniform(0.3, 0.6))
            x0 = int(rng.integers(0, w - side))
            y0 = int(rng.integers(0, h - side))
            draw_shape(
                ImageDraw.Draw(img), SHAPES[c % len(SHAPES)], (x0, y0, x0 + side, y0 + side), class_colour(c, classes)
            )
            img.save(root / name / f"img_{i:04d}.jpg", quality=quality)
    return SyntheticDataset(root, names, classes * per_class)
