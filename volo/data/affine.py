"""The geometry of aligned augmentation, once: every geometric step as a 3x3 matrix in normalised coordinates.

Convention (the one of `F.affine_grid` / `F.grid_sample` with align_corners=False, see `volo.data.batch`):
a point of an image W pixels wide is x_n = 2 * x_px / W - 1, where x_px is a continuous pixel coordinate
(pixel i covers [i, i+1), its centre is i + 0.5; PIL's resize and transform use the same continuous frame).
x goes right, y goes down. Each step's matrix maps OUTPUT coordinates to INPUT coordinates (the inverse map that
resamplers use), so a chain of steps s1 (applied first) ... sn composes as `T = T1 @ T2 @ ... @ Tn`: the point of
the original image that output pixel p shows is T @ p.

One implementation (numpy, float64) serves both paths: every function takes scalars for one image (the PIL path,
`volo.data.transforms` / `randaugment`) or arrays of B values for a batch (then returns (B, 3, 3)). The DALI and
nvJPEG loaders hold torch tensors and call the thin adapters at the end (`crop_affine`, `flip_affine`,
`pixel_to_normalised`, `to_label_transform`), which convert and call the same functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _matrices(rows: list[list]) -> np.ndarray:
    """3x3 entries (scalars or equal-length arrays) -> (3, 3) or (B, 3, 3) float64."""
    flat = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for row in rows for v in row])
    return np.stack(flat, axis=-1).reshape(*flat[0].shape, 3, 3)


def identity() -> np.ndarray:
    """(3, 3) float64 identity."""
    return np.eye(3)


def to_normalised(width: float, height: float) -> np.ndarray:
    """(3, 3): continuous pixel coords of a width x height image -> normalised [-1, 1] coords."""
    return np.array([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]])


def from_normalised(width: float, height: float) -> np.ndarray:
    """(3, 3): normalised coords -> continuous pixel coords of a width x height image."""
    return np.array([[width / 2.0, 0.0, width / 2.0], [0.0, height / 2.0, height / 2.0], [0.0, 0.0, 1.0]])


def crop_resize(box, in_size) -> np.ndarray:
    """The crop box: (3, 3) for cropping `box` = (left, top, right, bottom) in input pixels and resizing it to the
    whole output; `in_size` is the input's (width, height). Arrays of B boxes / sizes give (B, 3, 3).

    The output size does not matter: normalised output [-1, 1] covers the box, whatever its pixel count.
    """
    left, top, right, bottom = box
    W, H = in_size
    return _matrices(
        [
            [(right - left) / W, 0.0, (left + right) / W - 1.0],
            [0.0, (bottom - top) / H, (top + bottom) / H - 1.0],
            [0.0, 0.0, 1.0],
        ]
    )


def hflip(flipped=True) -> np.ndarray:
    """(3, 3) horizontal flip: output x shows input -x; with an array of B flags, (B, 3, 3), identity where false."""
    if flipped is True:
        return np.diag([-1.0, 1.0, 1.0])
    sign = 1.0 - 2.0 * np.asarray(flipped, dtype=np.float64)
    return _matrices([[sign, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def rotate_coeffs(degrees: float, size: tuple[float, float]) -> tuple[float, ...]:
    """PIL's `Image.rotate(degrees)` (counter-clockwise about the centre of a `size` = (w, h) image) as AFFINE
    coefficients."""
    w, h = size
    cx, cy = w / 2.0, h / 2.0
    a = -math.radians(degrees)
    m = [math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0]
    m[2] = m[0] * -cx + m[1] * -cy + cx
    m[5] = m[3] * -cx + m[4] * -cy + cy
    return tuple(m)


def spatial_coeffs(name: str, level: float, size: tuple[float, float], translate_pct: float) -> tuple[float, ...]:
    """The RandAugment warp: PIL AFFINE coefficients (output -> input pixels) of one signed spatial op of timm's
    increasing set on a `size` = (w, h) image; `level` in [-1, 1] (magnitude / 10 with its random sign)."""
    w, h = size
    if name == "Rotate":
        return rotate_coeffs(level * 30.0, size)
    if name == "ShearX":
        return (1.0, level * 0.3, 0.0, 0.0, 1.0, 0.0)
    if name == "ShearY":
        return (1.0, 0.0, 0.0, level * 0.3, 1.0, 0.0)
    if name == "TranslateXRel":
        return (1.0, 0.0, level * translate_pct * w, 0.0, 1.0, 0.0)
    assert name == "TranslateYRel", name
    return (1.0, 0.0, 0.0, 0.0, 1.0, level * translate_pct * h)


def from_pixel_affine(coeffs, size: tuple[int, int]) -> np.ndarray:
    """Pixel -> normalised coordinates: (3, 3) normalised form of a PIL AFFINE transform `coeffs` = (a, b, c, d, e,
    f) on a same-size image; (B, 6) coefficients give (B, 3, 3).

    PIL maps output pixel (x, y) to input (a x + b y + c, d x + e y + f) in continuous pixel coordinates.
    """
    a, b, c, d, e, f = np.moveaxis(np.asarray(coeffs, dtype=np.float64), -1, 0)
    pixel = _matrices([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])
    W, H = size
    return to_normalised(W, H) @ pixel @ from_normalised(W, H)


def compose(*matrices: np.ndarray) -> np.ndarray:
    """Chain output->input maps, outermost (closest to the original image) first: T1 @ T2 @ ... @ Tn."""
    total = matrices[0]
    for m in matrices[1:]:
        total = total @ m
    return total


def as_label_transform(matrix: np.ndarray) -> np.ndarray:
    """The label transform: the (2, 3) float32 top of a (3, 3) matrix ((B, 2, 3) of a batch), as `Batch` holds it."""
    return np.ascontiguousarray(matrix[..., :2, :], dtype=np.float32)


# ---- adapters for the batched loaders (DALI, nvJPEG): torch tensors in, the functions above, torch out ----


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def crop_affine(crops_yxhw: torch.Tensor, image_hw: torch.Tensor) -> torch.Tensor:
    """`crop_resize` of a batch: crops_yxhw (B, 4) pixel boxes (top, left, height, width) of images of image_hw
    (B, 2) (height, width) -> (B, 3, 3) float64."""
    top, left, h, w = _np(crops_yxhw).T
    H, W = _np(image_hw).T
    return torch.from_numpy(crop_resize((left, top, left + w, top + h), (W, H)))


def flip_affine(flipped: torch.Tensor) -> torch.Tensor:
    """`hflip` of a batch: (B,) flags -> (B, 3, 3) float64."""
    return torch.from_numpy(hflip(_np(flipped).reshape(-1)))


def pixel_to_normalised(dst_to_src_px: torch.Tensor, size: int) -> torch.Tensor:
    """`from_pixel_affine` of a batch: (B, 2|3, 3) dst->src maps in pixel coords of an S x S image -> (B, 3, 3)."""
    coeffs = _np(dst_to_src_px)[:, :2].reshape(-1, 6)
    return torch.from_numpy(from_pixel_affine(coeffs, (size, size)))


def to_label_transform(*affines_out_to_orig: torch.Tensor) -> torch.Tensor:
    """`compose` + `as_label_transform` of a batch: (B, 3, 3) maps, outermost first -> (B, 2, 3) float32."""
    return torch.from_numpy(as_label_transform(compose(*[_np(a) for a in affines_out_to_orig])))
