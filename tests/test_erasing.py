"""Batched random erasing (`volo.data.erasing`) and its use by the nvJPEG and DALI loaders.

The sampler must draw torchvision's `RandomErasing.get_params` distribution, erase one rectangle per chosen sample
and nothing else, and be reproducible from its generator; the loaders must erase at reprob=1, not at 0, leave labels
and label transforms as they were, and resume to the very same erased batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_loader_backends import MEAN, STD, make_dataset, options
from torchvision import transforms as T

from volo.data.backends import build_train_loader
from volo.data.erasing import RATIO, SCALE, BatchErasing, erase_batch, erasing_seed, sample_boxes

N = 10_000  # draws per distribution check
# Two-sample Kolmogorov-Smirnov critical value at alpha = 0.001, c(alpha) = sqrt(-ln(alpha / 2) / 2) = 1.95. With
# fixed seeds the check is deterministic; the threshold says an equal distribution would pass 99.9% of seeds (more:
# the test is conservative on discrete data), while swapping h and w on the 24 x 40 image gives D ~ 0.09.
KS_CRITICAL = 1.95 * math.sqrt(2 / N)


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the empirical CDFs of two samples (the two-sample KS statistic)."""
    a, b = a.double().sort().values, b.double().sort().values
    x = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, x, right=True) / len(a)
    fb = torch.searchsorted(b, x, right=True) / len(b)
    return (fa - fb).abs().max().item()


def torchvision_boxes(height: int, width: int, scale: tuple[float, float], seed: int) -> torch.Tensor:
    """(N, 5) int: top, left, h, w, fitted, from torchvision's own sampler (value=[0] skips drawing the noise)."""
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    rows = [T.RandomErasing.get_params(img, scale, RATIO, value=[0.0])[:4] for _ in range(N)]
    boxes = torch.tensor(rows)
    fitted = ~((boxes[:, 2] == height) & (boxes[:, 3] == width))  # torchvision's "no rectangle fitted" answer
    return torch.cat([boxes, fitted[:, None].long()], dim=1)


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(24, 40, SCALE), (32, 32, (0.7, 0.95))],  # non-square (h/w swaps show); large areas (~23% never fit)
)
def test_sampler_draws_torchvisions_distribution(height, width, scale):
    tv = torchvision_boxes(height, width, scale, seed=0)
    ours = sample_boxes(N, height, width, 1.0, torch.Generator().manual_seed(1), scale=scale)
    # Fraction left un-erased after 10 misfits: both binomial(N, q); 4 standard deviations of their difference.
    q_tv, q_ours = 1 - tv[:, 4].double().mean().item(), 1 - ours.applied.double().mean().item()
    assert abs(q_tv - q_ours) <= 4 * math.sqrt(2 * max(q_tv, 1e-4) * (1 - q_tv) / N)
    if scale == SCALE:
        assert q_tv == q_ours == 0.0
    else:
        assert 0.15 < q_ours < 0.3  # the 10-attempt rule matters here (one attempt would leave ~86% un-erased)
    tv = tv[tv[:, 4] == 1]
    top, left, h, w = (t[ours.applied] for t in (ours.top, ours.left, ours.height, ours.width))
    for mine, theirs in [(top, tv[:, 0]), (left, tv[:, 1]), (h, tv[:, 2]), (w, tv[:, 3])]:
        assert ks_distance(mine, theirs) < KS_CRITICAL
    assert ks_distance(h * w, tv[:, 2] * tv[:, 3]) < KS_CRITICAL
    assert ks_distance(h / w, tv[:, 2] / tv[:, 3]) < KS_CRITICAL
    assert ks_distance(h, tv[:, 3]) > 3 * KS_CRITICAL or height == width  # the check has power against a swap


def test_rectangles_stay_in_bounds():
    H, W = 24, 40
    b = sample_boxes(N, H, W, 1.0, torch.Generator().manual_seed(2))
    assert b.applied.all()
    assert (b.top >= 0).all() and (b.left >= 0).all()
    assert (b.top + b.height <= H).all() and (b.left + b.width <= W).all()
    assert (b.height < H).all() and (b.width < W).all()  # torchvision's strict fit test
    # h = round(sqrt(area * r)), w = round(sqrt(area / r)): each side is within 0.5 of the unrounded one.
    h, w = b.height.double(), b.width.double()
    assert ((h + 0.5) * (w + 0.5) >= SCALE[0] * H * W).all() and ((h - 0.5) * (w - 0.5) <= SCALE[1] * H * W).all()
    assert ((h + 0.5) / (w - 0.5) >= RATIO[0]).all() and ((h - 0.5) / (w + 0.5) <= RATIO[1]).all()


def test_probability_of_erasing():
    b = sample_boxes(N, 32, 32, 0.25, torch.Generator().manual_seed(3))
    # Every default rectangle fits a 32 x 32 image within 10 tries, so erased ~ binomial(N, 0.25); 4 sigma = 0.017.
    assert abs(b.applied.double().mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / N)


def test_prob_zero_is_identity_and_draws_nothing():
    x = torch.randn(8, 3, 16, 16)
    gen = torch.Generator().manual_seed(4)
    state = gen.get_state()
    assert erase_batch(x, 0.0, gen) is x
    assert torch.equal(gen.get_state(), state)
    assert BatchErasing(0.0)(x, seed=5) is x


def changed_pixels(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels that differ in any channel (noise never equals the old value in practice)."""
    return (before != after).any(dim=1)


def is_one_rectangle(mask_hw: torch.Tensor) -> bool:
    """The true pixels are exactly their bounding box (and there are some)."""
    rows, cols = mask_hw.any(dim=1).nonzero().flatten(), mask_hw.any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return False
    box = torch.zeros_like(mask_hw)
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return torch.equal(box, mask_hw)


def test_prob_one_erases_one_noise_rectangle_per_sample():
    B, H, W = 64, 24, 40
    x = torch.rand(B, 3, H, W) + 10  # far from the noise's range, so every erased value shows
    out = erase_batch(x.clone(), 1.0, torch.Generator().manual_seed(6))
    changed = changed_pixels(x, out)
    assert all(is_one_rectangle(changed[i]) for i in range(B))
    assert torch.equal((out != x).all(dim=1), changed)  # all channels of an erased pixel are noise
    expected = sample_boxes(B, H, W, 1.0, torch.Generator().manual_seed(6)).mask(H, W)
    assert torch.equal(changed, expected)  # the rectangles the sampler reports, nothing else
    noise = out.permute(0, 2, 3, 1)[changed]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05  # standard normal, >10k values
    assert torch.equal(out[~changed[:, None].expand_as(x)], x[~changed[:, None].expand_as(x)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_same_seed_same_erasing_in_the_images_dtype(dtype):
    x = torch.zeros(16, 3, 20, 20, dtype=dtype)
    a = erase_batch(x, 0.5, torch.Generator().manual_seed(7))
    b = erase_batch(x, 0.5, torch.Generator().manual_seed(7))
    c = erase_batch(x, 0.5, torch.Generator().manual_seed(8))
    assert a.dtype == dtype and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, torch.zeros_like(x))  # the input is not written
    erasing = BatchErasing(0.5)
    assert torch.equal(erasing(x, 7), a) and torch.equal(erasing(x, 7), a)  # re-seeded per call


def test_erasing_seed_is_fixed_and_distinct_per_position():
    seeds = {erasing_seed(s, r, e, k) for s in (0, 1) for r in (0, 1, 7) for e in (0, 1, 2) for k in range(50)}
    assert len(seeds) == 2 * 3 * 3 * 50 and all(0 <= s < 2**64 for s in seeds)
    assert erasing_seed(42, 3, 5, 17) == erasing_seed(42, 3, 5, 17)


# ---- the loaders: erase at reprob=1, not at 0; labels and label transforms untouched; exact resume ----


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("asym_erasing"))


def in_normalised_range(images: torch.Tensor) -> bool:
    """Every value is a colour in [0, 1] after normalisation (noise would leave that range somewhere)."""
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    return bool(((images >= lo - 1e-3) & (images <= hi + 1e-3)).all())


def check_erases_only_the_image(backend: str, dataset: Path, **kw) -> None:
    plain_loader = build_train_loader(options(dataset, reprob=0.0, **kw, backend=backend))
    erased_loader = build_train_loader(options(dataset, reprob=1.0, **kw, backend=backend))
    pairs = 0
    for plain, erased in zip(plain_loader, erased_loader):
        assert torch.equal(plain_loader.last_indices, erased_loader.last_indices)
        assert torch.equal(plain.labels, erased.labels)
        assert torch.equal(plain.label_transform, erased.label_transform)
        assert in_normalised_range(plain.images) and not in_normalised_range(erased.images)
        changed = changed_pixels(plain.images, erased.images)
        S = plain.images.shape[-1]
        for i in range(len(plain)):
            assert is_one_rectangle(changed[i])
            assert 0.01 < changed[i].sum().item() / (S * S) < 0.4  # area fraction 0.02-0.33 up to rounding
        pairs += 1
    assert pairs == len(plain_loader) == 4


def check_resume_repeats_the_erasing(backend: str, dataset: Path, **kw) -> None:
    loader = build_train_loader(options(dataset, reprob=0.5, **kw, backend=backend))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [(loader.last_indices.tolist(), b.images.clone()) for b in it]
    rest += [(loader.last_indices.tolist(), b.images.clone()) for b in loader]  # and the next epoch
    resumed = build_train_loader(options(dataset, reprob=0.5, **kw, backend=backend))
    resumed.load_state_dict(state)
    again = [(resumed.last_indices.tolist(), b.images.clone()) for b in resumed]
    again += [(resumed.last_indices.tolist(), b.images.clone()) for b in resumed]
    assert len(rest) == len(again) == 2 * len(loader) - 1
    assert [r[0] for r in rest] == [a[0] for a in again]
    for (_, x), (_, y) in zip(rest, again):
        torch.testing.assert_close(x, y, atol=0, rtol=0)
    # p = 0.5: both kinds of sample are in the compared batches. A sample counts as erased when its noise left the
    # colour range (a rare tiny rectangle may not: it then counts as plain, which cannot make this pass wrongly).
    erased = [not in_normalised_range(x[i : i + 1]) for _, x in rest for i in range(len(x))]
    assert any(erased) and not all(erased)


def test_nvjpeg_erases_the_image_only(dataset):
    check_erases_only_the_image("nvjpeg", dataset)


def test_nvjpeg_resume_repeats_the_erasing(dataset):
    check_resume_repeats_the_erasing("nvjpeg", dataset, rand_augment="")


@pytest.mark.dali
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dali_erases_the_image_only(dataset):
    pytest.importorskip("nvidia.dali")
    check_erases_only_the_image("dali", dataset, rand_augment="")


@pytest.mark.dali
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dali_resume_repeats_the_erasing(dataset):
    pytest.importorskip("nvidia.dali")
    check_resume_repeats_the_erasing("dali", dataset, rand_augment="")
