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
import torch


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


# ---- the same steps for a whole batch (DALI, nvJPEG): (B, 3, 3) float64 torch tensors ----


def crop_affine(crops_yxhw: torch.Tensor, image_hw: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) map from normalised crop coords to normalised whole-image coords.

    crops_yxhw: (B, 4) pixel box (top, left, height, width); image_hw: (B, 2) original (height, width).
    A crop pixel at normalised x shows image pixel x0 + (x + 1) / 2 * w, i.e. normalised (w/W) x + (2 x0 + w)/W - 1.
    """
    crops = crops_yxhw.to(torch.float64)
    hw = image_hw.to(torch.float64)
    y0, x0, h, w = crops.unbind(1)
    H, W = hw.unbind(1)
    out = torch.zeros(crops.shape[0], 3, 3, dtype=torch.float64)
    out[:, 0, 0] = w / W
    out[:, 0, 2] = (2 * x0 + w) / W - 1
    out[:, 1, 1] = h / H
    out[:, 1, 2] = (2 * y0 + h) / H - 1
    out[:, 2, 2] = 1
    return out


def flip_affine(flipped: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) horizontal mirror x -> -x where flipped[i] is true, identity elsewhere."""
    out = torch.eye(3, dtype=torch.float64).repeat(flipped.shape[0], 1, 1)
    out[:, 0, 0] = 1 - 2 * flipped.to(torch.float64).flatten()
    return out


def pixel_to_normalised(dst_to_src_px: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2|3, 3) dst->src map in pixel coords (corner of the first pixel = 0) of an S x S image -> normalised."""
    m = torch.eye(3, dtype=torch.float64).repeat(dst_to_src_px.shape[0], 1, 1)
    m[:, :2] = dst_to_src_px[:, :2].to(torch.float64)
    half = size / 2
    to_px = torch.tensor([[half, 0, half], [0, half, half], [0, 0, 1]], dtype=torch.float64)
    return torch.linalg.inv(to_px) @ m @ to_px


def to_label_transform(*affines_out_to_orig: torch.Tensor) -> torch.Tensor:
    """Chain (B, 3, 3) maps, outermost (closest to the original image) first -> (B, 2, 3) float32 label_transform."""
    total = affines_out_to_orig[0]
    for a in affines_out_to_orig[1:]:
        total = total @ a
    return total[:, :2].to(torch.float32).contiguous()
