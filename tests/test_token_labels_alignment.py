"""Every token's target follows the pixels it sees: asymmetric images, tall/wide crops, flips, rotation, shear,
translation, eval crops; exact parity with torchvision's RoIAlign for axis-aligned crops; the reference's
transposed-box bug is caught by the same check."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import roi_align

from volo.data import affine
from volo.data.batch import Batch
from volo.data.randaugment import RandAugmentConfig, apply_op
from volo.data.targets import build_targets, dense_label_map, sample_label_map
from volo.data.transforms import EvalTransform, TrainTransform, TrainTransformConfig

W, H = 150, 100  # original image; label map of 15 x 10 cells (10 px each)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.float64)
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SIZE = 128  # output: 8 x 8 tokens of 16 px


def region_classes(h: int, w: int) -> np.ndarray:
    """(h, w) class per cell: left third class 0; right part top half 1, bottom half 2 (no symmetry)."""
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    cls = np.where(ys[:, None] < 0.5, 1, 2) * np.ones((h, w), dtype=np.int64)
    cls[:, xs < 1 / 3] = 0
    return cls


def asymmetric_image() -> Image.Image:
    return Image.fromarray(COLOURS[region_classes(H, W)].astype(np.uint8))


def label_map() -> tuple[torch.Tensor, torch.Tensor]:
    """Top-3 store-style map (1, 3, 10, 15): the cell's class with logit 8, the others 0."""
    cls = torch.from_numpy(region_classes(10, 15))
    ids = torch.stack([cls, (cls + 1) % 3, (cls + 2) % 3])[None]
    values = torch.zeros(1, 3, 10, 15, dtype=torch.float16)
    values[:, 0] = 8.0
    return values, ids


def pixel_classes(image: torch.Tensor) -> np.ndarray:
    """(3, S, S) normalised -> (S, S) class of each pixel, -1 where it is none of the three colours."""
    rgb = (image.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255.0
    dist = np.linalg.norm(rgb[:, :, None, :] - COLOURS[None, None], axis=-1)
    cls = dist.argmin(-1)
    cls[dist.min(-1) > 60] = -1
    return cls


def token_check(image: torch.Tensor, label_transform: torch.Tensor) -> tuple[int, int, list]:
    """(pure tokens checked, of which mismatched, class counts) for one transformed sample."""
    values, ids = label_map()
    batch = Batch(image[None], torch.tensor([0]), label_transform[None].float(), values, ids)
    targets = build_targets(batch, num_classes=3)
    S = SIZE // 16
    pred = targets.tokens[0].argmax(-1).reshape(S, S).numpy()
    classes = pixel_classes(image)
    checked, wrong, seen = 0, 0, [0, 0, 0]
    for r in range(S):
        for c in range(S):
            patch = classes[r * 16 + 2 : r * 16 + 14, c * 16 + 2 : c * 16 + 14]
            known = patch[patch >= 0]
            if known.size < 0.95 * patch.size or (known != known[0]).any():
                continue  # a boundary or fill-colour token: no single class to follow
            checked += 1
            seen[known[0]] += 1
            wrong += int(pred[r, c] != known[0])
    return checked, wrong, seen


class FixedOps:
    """Stands in for AlignedRandAugment: always applies the given spatial ops at magnitude 9."""

    def __init__(self, *names: str):
        self.names = names

    def __call__(self, img: Image.Image):
        matrix = affine.identity()
        for name in self.names:
            img, m = apply_op(name, img, 9.0, RandAugmentConfig(), (128, 128, 128))
            matrix = matrix @ m
        return img, matrix


def transform(hflip: float, ops: tuple[str, ...] = ()) -> TrainTransform:
    cfg = TrainTransformConfig(
        img_size=SIZE, interpolation="bilinear", hflip=hflip, auto_augment=None, re_prob=0.0, mean=MEAN, std=STD
    )
    t = TrainTransform(cfg)
    t.rand_augment = FixedOps(*ops) if ops else None
    return t


CROPS = {
    "tall": (20, 0, 80, 100),
    "wide": (0, 30, 150, 70),
    "corner": (30, 40, 90, 100),
    "whole": (0, 0, 150, 100),
}


@pytest.mark.parametrize("crop", list(CROPS))
@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_tokens_follow_pixels_through_crops_and_flips(crop: str, hflip: float):
    out = transform(hflip)(asymmetric_image(), box=CROPS[crop])
    checked, wrong, seen = token_check(out.image, torch.from_numpy(out.label_transform))
    assert wrong == 0
    assert checked >= 20
    assert sum(n > 0 for n in seen) >= 2  # the crop shows at least two classes


@pytest.mark.parametrize("ops", [("Rotate",), ("ShearX",), ("ShearY",), ("TranslateXRel",), ("Rotate", "ShearY")])
@pytest.mark.parametrize("seed", [0, 1])
def test_tokens_follow_pixels_through_spatial_randaugment(ops: tuple[str, ...], seed: int):
    random.seed(seed)  # picks the op signs and the resampling filter
    out = transform(0.5, ops)(asymmetric_image(), box=CROPS["tall" if seed else "wide"])
    assert not np.allclose(out.label_transform, np.round(out.label_transform))  # a real, non-trivial affine
    checked, wrong, _ = token_check(out.image, torch.from_numpy(out.label_transform))
    assert wrong == 0
    assert checked >= 12


@pytest.mark.parametrize("crop_pct", [0.875, 1.15])
def test_eval_transform_affine_follows_pixels(crop_pct: float):
    out = EvalTransform(SIZE, crop_pct, "bicubic", MEAN, STD)(asymmetric_image())
    checked, wrong, seen = token_check(out.image, torch.from_numpy(out.label_transform))
    assert wrong == 0 and checked >= 20 and all(n > 0 for n in seen)


def test_reference_transposed_box_is_caught():
    """The reference passes (top, left, bottom, right) where RoIAlign expects (x1, y1, x2, y2): for a tall crop
    the label crop is the transpose of the image crop. The same token check flags it."""
    left, top, right, bottom = CROPS["tall"]
    out = transform(0.0)(asymmetric_image(), box=CROPS["tall"])
    wrong_box = affine.crop_resize((top * W / H, left * H / W, bottom * W / H, right * H / W), (W, H))
    _, wrong, _ = token_check(out.image, torch.from_numpy(affine.as_label_transform(wrong_box)))
    assert wrong >= 8


@pytest.mark.parametrize("box", [(20, 0, 80, 100), (0, 30, 150, 70), (37, 11, 121, 95)])
def test_axis_aligned_crop_matches_torchvision_roi_align(box):
    """Our affine sampling equals RoIAlign(aligned=True, sampling_ratio=2) on the (x1, y1, x2, y2) box."""
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 5, 10, 15, generator=g).half()
    ids = torch.stack([torch.randperm(40, generator=g)[:5] for _ in range(2 * 10 * 15)]).reshape(2, 10, 15, 5)
    ids = ids.permute(0, 3, 1, 2)
    dense = dense_label_map(values, ids, 40)
    lt = torch.from_numpy(affine.as_label_transform(affine.crop_resize(box, (W, H))))[None].repeat(2, 1, 1)
    S = 7
    tokens, cls = sample_label_map(dense, lt, (S, S), supersample=2)
    x1, y1, x2, y2 = box[0] * 15 / W, box[1] * 10 / H, box[2] * 15 / W, box[3] * 10 / H
    rois = torch.tensor([[i, x1, y1, x2, y2] for i in range(2)], dtype=torch.float32)
    ref_tokens = roi_align(dense, rois, output_size=S, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    ref_cls = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=2 * S, aligned=True)
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, ref_cls[:, :, 0, 0], atol=1e-5, rtol=1e-5)


def test_points_outside_the_image_get_uniform_targets():
    """A crop_pct > 1 eval view pads a border: tokens entirely outside the image get a uniform target."""
    values, ids = label_map()
    shrink = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # output shows [-2, 2]: a border of 1/4 all round
    batch = Batch(torch.zeros(1, 3, SIZE, SIZE), torch.tensor([0]), shrink, values, ids)
    t = build_targets(batch, num_classes=3, smoothing=0.1).tokens[0].reshape(8, 8, 3)
    torch.testing.assert_close(t[0, 0], torch.full((3,), 1 / 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(t[7, 7], torch.full((3,), 1 / 3), atol=1e-6, rtol=0)
    assert t[3, 2].argmax() == 0 and t[2, 5].argmax() == 1 and t[5, 5].argmax() == 2
