"""Open any image file as 8-bit RGB: greyscale, 16-bit, CMYK, palette and alpha images are converted.

The work per image is bounded before any pixel is decoded: at most MAX_PIXELS pixels (PIL itself only warns up to
twice its limit, and a 1-bit 10000 x 10000 PNG is 12 kB on disk) and an aspect ratio of at most MAX_ASPECT (the eval
resize scales the short side, so a 467-byte 1 x 400000 PNG would become 256 x 102 million pixels). Anything that
cannot be decoded within those bounds (bombs, zTXt bombs, truncated or foreign files) raises `UnreadableImage`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
BACKGROUND = (255, 255, 255)
"""Colour transparent pixels are composited onto."""
MAX_PIXELS = 89_478_485
"""PIL's own bomb threshold (0.25 GiB as RGB): a 50-megapixel photo passes, anything larger is refused."""
MAX_ASPECT = 100
"""Longest side / shortest side: a 25:1 panorama passes; a 1 x 400000 strip is refused."""


class UnreadableImage(OSError):
    """An image that cannot be decoded, or only with unbounded work; the message says which and why."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `img` (alpha composited onto white, 16/32-bit greyscale scaled to 8 bits)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def check_bounds(size: tuple[int, int]) -> None:
    """Raise UnreadableImage when an image of `size` (w, h) would cost unbounded work."""
    w, h = size
    if w * h > MAX_PIXELS:
        raise UnreadableImage(f"{w} x {h} pixels exceed the bound of {MAX_PIXELS:,} (a decompression bomb?)")
    if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
        raise UnreadableImage(f"{w} x {h} pixels: an aspect ratio beyond {MAX_ASPECT}:1 is not a photo")


def load_rgb(path: Path) -> Image.Image:
    """Decode `path` fully (truncated files fail here, not later) and convert to RGB; the size is checked against
    the bounds from the header, before decoding. Every failure is an `UnreadableImage` (an OSError)."""
    try:
        with warnings.catch_warnings():  # PIL warns between 1x and 2x its limit; check_bounds refuses those
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_bounds(img.size)
                img.load()
                return to_rgb(img)
    except UnreadableImage:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # ValueError: a zTXt/iCCP chunk beyond PIL's decompression limit, SyntaxError: broken headers
        reason = (str(err).splitlines() or [""])[0][:160]
        raise UnreadableImage(f"{type(err).__name__}: {reason}") from None
