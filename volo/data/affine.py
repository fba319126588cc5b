"""Affine bookkeeping for aligned augmentation: every geometric step as a 3x3 matrix in normalised coordinates.

Convention (the one of `F.affine_grid` / `F.grid_sample` with align_corners=False, see `volo.data.batch`):
a point of an image W pixels wide is x_n = 2 * x_px / W - 1, where x_px is a continuous pixel coordinate
(pixel i covers [i, i+1), its centre is i + 0.5; PIL's resize and transform use the same continuous frame).
x goes right, y goes down. Each step's matrix maps OUTPUT coordinates to INPUT coordinates (the inverse map that
resamplers use), so a chain of steps s1 (applied first) ... sn composes as `T = T1 @ T2 @ ... @ Tn`: the point of
the original image that output pixel p shows is T @ p.
"""

from __future__ import annotations

import numpy as np


def identity() -> np.ndarray:
    """(3, 3) float64 identity."""
    return np.eye(3)


def to_normalised(width: float, height: float) -> np.ndarray:
    """(3, 3): continuous pixel coords of a width x height image -> normalised [-1, 1] coords."""
    return np.array([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]])


def from_normalised(width: float, height: float) -> np.ndarray:
    """(3, 3): normalised coords -> continuous pixel coords of a width x height image."""
    return np.array([[width / 2.0, 0.0, width / 2.0], [0.0, height / 2.0, height / 2.0], [0.0, 0.0, 1.0]])


def crop_resize(box: tuple[float, float, float, float], in_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) for cropping `box` = (left, top, right, bottom) in input pixels and resizing it to the whole output.

    The output size does not matter: normalised output [-1, 1] covers the box, whatever its pixel count.
    `in_size` is the input's (width, height).
    """
    left, top, right, bottom = box
    W, H = in_size
    return np.array(
        [
            [(right - left) / W, 0.0, (left + right) / W - 1.0],
            [0.0, (bottom - top) / H, (top + bottom) / H - 1.0],
            [0.0, 0.0, 1.0],
        ]
    )


def hflip() -> np.ndarray:
    """(3, 3) horizontal flip: output x shows input -x."""
    return np.diag([-1.0, 1.0, 1.0])


def from_pixel_affine(coeffs: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    """(3, 3) normalised form of a PIL AFFINE transform `coeffs` = (a, b, c, d, e, f) on a same-size image.

    PIL maps output pixel (x, y) to input (a x + b y + c, d x + e y + f) in continuous pixel coordinates.
    """
    a, b, c, d, e, f = coeffs
    pixel = np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])
    W, H = size
    return to_normalised(W, H) @ pixel @ from_normalised(W, H)


def as_label_transform(matrix: np.ndarray) -> np.ndarray:
    """The (2, 3) float32 top of a (3, 3) matrix, the form `Batch.label_transform` carries."""
    return np.ascontiguousarray(matrix[:2], dtype=np.float32)
