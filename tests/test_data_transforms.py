"""Transforms: RandAugment spec parsing, spatial-op matrices against PIL's own pixel motion, eval geometry."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from volo.data import affine
from volo.data.affine import rotate_coeffs
from volo.data.randaugment import AlignedRandAugment, RandAugmentConfig, apply_op
from volo.data.transforms import EvalTransform, TrainTransform, TrainTransformConfig
from volo.errors import VoloError


def test_parse_rand_augment_spec():
    cfg = RandAugmentConfig.parse("rand-m9-mstd0.5-inc1")
    assert (cfg.magnitude, cfg.num_ops, cfg.magnitude_std, cfg.prob) == (9.0, 2, 0.5, 0.5)
    assert RandAugmentConfig.parse("rand-m7-n3-inc1").num_ops == 3
    for bad in ("auto-m9", "rand-m9-mstd0.5", "rand-q3-inc1", "rand-mX-inc1"):
        with pytest.raises(VoloError):
            RandAugmentConfig.parse(bad)


def test_rotate_coefficients_reproduce_pil_rotate():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    ours = img.transform(img.size, Image.Transform.AFFINE, rotate_coeffs(17.0, img.size), Image.Resampling.BILINEAR)
    theirs = img.rotate(17.0, resample=Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(ours).astype(int) - np.asarray(theirs).astype(int)).max() <= 1


def _dot_image(x: int, y: int, size=(96, 80)) -> Image.Image:
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[y - 2 : y + 3, x - 2 : x + 3] = 255
    return Image.fromarray(a)


def _centroid(img: Image.Image) -> tuple[float, float]:
    a = np.asarray(img)[:, :, 0].astype(np.float64)
    ys, xs = np.nonzero(a > 60)
    w = a[ys, xs]
    return float((xs * w).sum() / w.sum() + 0.5), float((ys * w).sum() / w.sum() + 0.5)  # continuous coords


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"])
@pytest.mark.parametrize("seed", [0, 1])
def test_spatial_op_matrix_maps_output_points_to_their_source(name: str, seed: int):
    random.seed(seed)
    x0, y0 = 40, 35
    img = _dot_image(x0, y0)
    out, m = apply_op(name, img, 5.0, RandAugmentConfig(), (0, 0, 0))
    W, H = img.size
    ox, oy = _centroid(out)
    p = affine.to_normalised(W, H) @ np.array([ox, oy, 1.0])
    src = affine.from_normalised(W, H) @ (m @ p)
    assert abs(src[0] - (x0 + 0.5)) < 0.6 and abs(src[1] - (y0 + 0.5)) < 0.6


def test_aligned_rand_augment_composes_its_spatial_ops(monkeypatch):
    """Two spatial ops per image, chained: the composed matrix still maps the dot back to its source."""
    import volo.data.randaugment as ra_module

    monkeypatch.setattr(ra_module, "INCREASING_OPS", tuple(sorted(ra_module.SPATIAL_OPS)))
    random.seed(3)
    ra = AlignedRandAugment(RandAugmentConfig(magnitude=4, num_ops=2, prob=1.0, magnitude_std=0.5), (0, 0, 0))
    img = _dot_image(50, 40)
    W, H = img.size
    for _ in range(10):
        out, m = ra(img)
        assert not np.allclose(m, affine.identity())
        ox, oy = _centroid(out)
        src = affine.from_normalised(W, H) @ (m @ (affine.to_normalised(W, H) @ np.array([ox, oy, 1.0])))
        assert abs(src[0] - 50.5) < 0.8 and abs(src[1] - 40.5) < 0.8


def test_eval_transform_geometry():
    img = Image.new("RGB", (300, 200))
    out = EvalTransform(224, 0.875).__call__(img)
    # short side 200 -> floor(224 / 0.875) = 256, long side 384; centre 224 crop: x offset 80, y offset 16
    s = 200 / 256
    box = (80 * s, 16 * s, 304 * s, 240 * s)
    np.testing.assert_allclose(out.label_transform, affine.as_label_transform(affine.crop_resize(box, (300, 200))))
    assert out.image.shape == (3, 224, 224)
    padded = EvalTransform(224, 1.15)(Image.new("RGB", (200, 200)))
    np.testing.assert_allclose(padded.label_transform, [[224 / 194, 0, 0], [0, 224 / 194, 0]], atol=1e-6)


def test_train_transform_output_and_determinism():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    t = TrainTransform(TrainTransformConfig(img_size=64))
    runs = []
    for _ in range(2):
        random.seed(7)
        torch.manual_seed(7)
        runs.append(t(img))
    assert runs[0].image.shape == (3, 64, 64) and runs[0].label_transform.shape == (2, 3)
    assert runs[0].label_transform.dtype == np.float32
    torch.testing.assert_close(runs[0].image, runs[1].image, atol=0, rtol=0)
    np.testing.assert_array_equal(runs[0].label_transform, runs[1].label_transform)


def test_random_erasing_touches_the_image_only():
    img = Image.fromarray(np.full((64, 64, 3), 100, np.uint8))
    cfg = TrainTransformConfig(img_size=32, auto_augment=None, re_prob=1.0, hflip=0.0)
    random.seed(0)
    torch.manual_seed(0)
    out = TrainTransform(cfg)(img, box=(0, 0, 64, 64))
    np.testing.assert_allclose(out.label_transform, [[1, 0, 0], [0, 1, 0]])
    flat = (torch.tensor(100 / 255) - 0.485) / 0.229
    assert (out.image[0] != flat).float().mean() > 0.01  # some pixels erased


def test_every_op_runs_at_the_magnitude_extremes():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    for name in ra_ops():
        for magnitude in (0.0, 10.0):
            out, m = apply_op(name, img, magnitude, RandAugmentConfig(), (124, 116, 104))
            assert out.size == img.size and out.mode == "RGB" and (m is None) == (name not in spatial_ops())
    black, _ = apply_op("PosterizeIncreasing", img, 10.0, RandAugmentConfig(), (0, 0, 0))
    assert np.asarray(black).max() == 0


def ra_ops():
    from volo.data.randaugment import INCREASING_OPS

    return INCREASING_OPS


def spatial_ops():
    from volo.data.randaugment import SPATIAL_OPS

    return SPATIAL_OPS
