"""Every data backend returns the PyTorch loader's batch contract, and its label_transform follows its pixels.

The alignment images are asymmetric in both axes: the left third and the top quarter are class A (red), the rest
class B (blue), on JPEGs of varied, non-square sizes. Sampling the class map through the reported affine
(`F.affine_grid`, the convention of `volo.data.batch`) must give the class each output pixel shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from volo.data import affine
from volo.data.affine import crop_affine, flip_affine, pixel_to_normalised, to_label_transform
from volo.data.backends import BACKENDS, LoaderOptions, build_train_loader
from volo.data.batch import Batch
from volo.data.loader_spec import position, scan_for
from volo.errors import VoloError
from volo.labeling.source import TokenLabel

RED, BLUE = (230, 20, 20), (20, 20, 230)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_dataset(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """Two classes of asymmetric JPEGs (left third + top quarter red, rest blue), sizes 60..160 x 60..120."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.integers(60, 120)), int(rng.integers(60, 160))
            pixels = np.empty((h, w, 3), np.uint8)
            pixels[:] = BLUE
            pixels[:, : w // 3] = RED
            pixels[: h // 4] = RED
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=95)
    return root


def class_a_mask(label_transform: torch.Tensor, size: int, margin: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, S) bool 'shows class A' from the affine, and the pixels far enough from every edge to be judged."""
    grid = F.affine_grid(label_transform.float(), [label_transform.shape[0], 1, size, size], align_corners=False)
    x, y = grid[..., 0], grid[..., 1]
    is_a = (x < -1 / 3) | (y < -1 / 2)
    inside = (x.abs() < 1 - margin) & (y.abs() < 1 - margin)
    clear = ((x + 1 / 3).abs() > margin) & ((y + 1 / 2).abs() > margin)
    return is_a, inside & clear


def redness(images: torch.Tensor) -> torch.Tensor:
    """(B, S, S) red minus blue of the de-normalised images."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    rgb = images.float().cpu() * std + mean
    return rgb[:, 0] - rgb[:, 2]


def colour_agreement(batch: Batch) -> float:
    """Fraction of judged pixels whose colour (red vs blue) is the class the affine says (no colour ops)."""
    is_a, judged = class_a_mask(batch.label_transform, batch.images.shape[-1])
    shows_a = redness(batch.images) > 0
    return ((shows_a == is_a) & judged).sum().item() / judged.sum().item()


def cluster_agreement(batch: Batch) -> float:
    """Like `colour_agreement` but blind to colour ops (invert, solarize...): per image, the two label regions must
    separate by colour, whichever colour each became.

    Only saturated pixels are judged: RandAugment's spatial ops fill the area they uncover with grey, and that area
    still maps inside the original image (outside the crop), so the label there is real but the pixels show fill.
    """
    is_a, judged = class_a_mask(batch.label_transform, batch.images.shape[-1])
    v = redness(batch.images)
    judged = judged & (v.abs() > 0.25)
    good = total = 0
    for i in range(len(batch)):
        a, b = v[i][judged[i] & is_a[i]], v[i][judged[i] & ~is_a[i]]
        if len(a) < 8 or len(b) < 8 or abs(a.mean() - b.mean()) < 0.2:
            continue  # one region only, or a colour op (posterize/solarize) made both look alike
        mid = (a.mean() + b.mean()) / 2
        sign = 1 if a.mean() > mid else -1
        good += ((sign * (a - mid)) > 0).sum().item() + ((sign * (b - mid)) < 0).sum().item()
        total += len(a) + len(b)
    assert total > 0, "no image showed both regions: the test lost its power"
    return good / total


def reference_batch(root: Path, size: int) -> Batch:
    """The PyTorch path's first batch (dataset + aligned PIL transforms + collate), through `build_train_loader`."""
    return next(iter(build_train_loader(options(root, img_size=size, workers=0, reprob=0.0, backend="pytorch"))))


def contract(batch: Batch) -> dict:
    """What must be identical across backends: types, dtypes, shapes (bar batch), value range of the images."""
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    per_channel = batch.images.float().cpu().transpose(0, 1).reshape(3, -1)
    in_range = bool(((per_channel.min(1).values >= lo - 1e-3) & (per_channel.max(1).values <= hi + 1e-3)).all())
    return {
        "type": type(batch).__name__,
        "images": (batch.images.dtype, tuple(batch.images.shape[1:]), in_range),
        "labels": (batch.labels.dtype, batch.labels.dim()),
        "label_transform": (batch.label_transform.dtype, tuple(batch.label_transform.shape[1:])),
        "token_labels": batch.has_token_labels,
    }


class DictLabels:
    """An in-memory label source: every cell of image key K holds the value hash(K) % 1000 and class ids 0..k-1."""

    num_classes, topk, map_size = 10, 3, (4, 5)

    def get(self, key: str) -> TokenLabel:
        v = float(sum(map(ord, key)) % 1000)
        ids = np.broadcast_to(np.arange(3, dtype=np.int16)[:, None, None], (3, 4, 5)).copy()
        return TokenLabel(np.full((3, 4, 5), v, np.float16), ids)

    def unreadable(self) -> set[str]:
        return {"a/000.jpg"}


def check_token_labels(batch: Batch, keys: list[str]) -> None:
    """The maps of the right images, in the contract's dtypes and shapes."""
    assert batch.label_values.dtype == torch.float16 and batch.label_values.shape == (len(batch), 3, 4, 5)
    assert batch.label_ids.dtype == torch.int64 and batch.label_ids.shape == (len(batch), 3, 4, 5)
    assert batch.label_values[:, 0, 0, 0].tolist() == [float(sum(map(ord, k)) % 1000) for k in keys]
    assert "a/000.jpg" not in keys  # the store's unreadable images are left out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("asym"))


def options(root: Path, **kw) -> LoaderOptions:
    """Small loader options; erasing off, since its noise would hide the colours the alignment checks judge
    (tests/test_erasing.py turns it on)."""
    base = dict(root=root, img_size=32, batch_size=4, workers=1, seed=3, reprob=0.0)
    base.update(kw)
    return LoaderOptions(**base)


# ---- geometry: one implementation (volo.data.affine); a batch gives every image its per-image matrix ----


def test_crop_affine_matches_reference_crop_resize():
    crops = torch.tensor([[5.0, 7.0, 40.0, 30.0], [0.0, 0.0, 60.0, 90.0]])  # top, left, h, w
    hw = torch.tensor([[60.0, 90.0], [60.0, 90.0]])
    ours = crop_affine(crops, hw)
    ref = [affine.crop_resize((7, 5, 37, 45), (90, 60)), affine.crop_resize((0, 0, 90, 60), (90, 60))]
    torch.testing.assert_close(ours, torch.tensor(np.stack(ref)), atol=0, rtol=0)
    flips = flip_affine(torch.tensor([1, 0]))
    torch.testing.assert_close(flips[0], torch.tensor(affine.hflip()), atol=0, rtol=0)
    torch.testing.assert_close(flips[1], torch.eye(3, dtype=torch.float64), atol=0, rtol=0)


def test_pixel_to_normalised_matches_reference():
    coeffs = [(0.9, 0.2, 3.0, -0.1, 1.1, -2.0), affine.spatial_coeffs("Rotate", -0.7, (32, 32), 0.45)]
    ours = pixel_to_normalised(torch.tensor(coeffs, dtype=torch.float64).view(2, 2, 3), 32)
    ref = np.stack([affine.from_pixel_affine(c, (32, 32)) for c in coeffs])
    torch.testing.assert_close(ours, torch.tensor(ref), atol=1e-15, rtol=0)
    chained = to_label_transform(torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1), ours)
    assert chained.dtype == torch.float32 and chained.shape == (2, 2, 3)
    for i in range(2):
        expected = affine.as_label_transform(affine.compose(affine.identity(), ref[i]))
        torch.testing.assert_close(chained[i], torch.from_numpy(expected), atol=0, rtol=0)


def test_alignment_check_has_power(dataset):
    """A mirrored affine must fail the check the backends pass (so passing means something)."""
    loader = build_train_loader(options(dataset, rand_augment="", backend="nvjpeg"))
    batch = next(iter(loader))
    assert colour_agreement(batch) > 0.97
    wrong = batch.label_transform.clone()
    wrong[:, 0, :] *= -1  # mirror the reported x
    assert colour_agreement(Batch(batch.images, batch.labels, wrong)) < 0.8


# ---- nvJPEG backend (runs on CPU here; on CUDA it decodes with nvJPEG) ----


def test_nvjpeg_contract_matches_pytorch(dataset):
    ref = contract(reference_batch(dataset, 32))
    loader = build_train_loader(options(dataset, backend="nvjpeg"))
    batch = next(iter(loader))
    assert contract(batch) == ref
    scan = scan_for(options(dataset))
    assert batch.labels.tolist() == [scan.samples[i].label for i in loader.last_indices.tolist()]


@pytest.mark.parametrize("rand_augment", ["", "rand-m10-mstd1-inc1"])  # m10: strongest ops, clipping
def test_nvjpeg_label_transform_follows_pixels(dataset, rand_augment):
    loader = build_train_loader(options(dataset, rand_augment=rand_augment, backend="nvjpeg"))
    warped = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            if rand_augment:
                assert cluster_agreement(batch) > 0.97
            else:
                assert colour_agreement(batch) > 0.97
            warped += int((batch.label_transform[:, :, :2].abs() > 1e-6).sum(dim=(1, 2)).gt(2).sum())
    assert (warped > 0) == bool(rand_augment)  # rotations/shears were applied and tracked, only with RandAugment


def test_nvjpeg_sharding_and_resume(dataset):
    seen = []
    for rank in range(2):
        loader = build_train_loader(options(dataset, rank=rank, world_size=2, backend="nvjpeg"))
        assert len(loader) == 2
        seen.append([i for _ in loader for i in loader.last_indices.tolist()])
    assert len(seen[0]) == len(seen[1]) == 8 and not set(seen[0]) & set(seen[1])

    loader = build_train_loader(options(dataset, backend="nvjpeg"))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [(loader.last_indices.tolist(), b.images) for b in it]
    resumed = build_train_loader(options(dataset, backend="nvjpeg"))
    resumed.load_state_dict(state)
    again = [(resumed.last_indices.tolist(), b.images) for b in resumed]
    assert [r[0] for r in rest] == [a[0] for a in again]
    for (_, x), (_, y) in zip(rest, again):
        torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_nvjpeg_sees_the_pytorch_loaders_images_per_step(dataset):
    """Both use the resumable sampler: same labels per step, and the same position after one step."""
    torch_loader = build_train_loader(options(dataset, workers=0, rank=1, world_size=2, backend="pytorch"))
    nvjpeg = build_train_loader(options(dataset, rank=1, world_size=2, backend="nvjpeg"))
    assert len(torch_loader) == len(nvjpeg) == 2
    assert [b.labels.tolist() for b in torch_loader] == [b.labels.tolist() for b in nvjpeg]
    assert torch_loader.state_dict() == {**nvjpeg.state_dict(), "backend": "pytorch"}


@pytest.mark.parametrize("backend", ["pytorch", "nvjpeg"])
def test_one_interface_and_one_resume_path(dataset, backend):
    """Every loader takes its own state or a backend-neutral `position` (what the trainer gives when the checkpoint
    holds no position of this loader); from 8 images two ranks re-shard the rest of the epoch, none twice."""
    full = build_train_loader(options(dataset, workers=0, backend=backend))
    order = list(full.sampler)  # this epoch's images, in the order the loader hands them out
    assert full.backend == backend and len(full) == 4 and len([b for b in full]) == 4
    assert full.state_dict() == {"backend": backend, "epoch": 1, "consumed": 0, "seed": 3, "world_size": 1}
    halves = []
    for rank in range(2):
        resumed = build_train_loader(options(dataset, workers=0, rank=rank, world_size=2, backend=backend))
        resumed.load_state_dict(position(0, 8))
        resumed.set_epoch(0)  # the trainer's epoch start keeps the restored position
        halves.append(list(resumed.sampler))
        assert len([b for b in resumed]) == 1 and resumed.state_dict()["epoch"] == 1
    assert sorted(halves[0] + halves[1]) == sorted(order[8:])
    other = "nvjpeg" if backend == "pytorch" else "pytorch"
    with pytest.raises(VoloError, match="resume with the same data.loader"):
        full.load_state_dict({**full.state_dict(), "backend": other})


def test_pytorch_loader_counts_batches_handed_out_and_takes_a_given_scan(dataset):
    """Its position counts batches handed out (read-ahead copies to the device do not count), and a scan the
    caller already made (and checked against the label store) is used as it is, not the folder scanned again."""
    from volo.data.dataset import ImageFolderDataset

    scan = ImageFolderDataset(dataset, transform=None)
    scan.entries = scan.entries[:12]  # e.g. the images a label store covers
    loader = build_train_loader(options(dataset, workers=0, backend="pytorch", dataset=scan, device="cpu"))
    assert len(loader) == 3 and len(scan.entries) == 12 and scan.transform is None  # the caller's object untouched
    it = iter(loader)
    next(it)
    assert loader.state_dict()["consumed"] == 4
    next(it)
    assert loader.state_dict()["consumed"] == 8


@pytest.mark.parametrize("backend", ["pytorch", "nvjpeg"])
def test_token_labels_follow_the_sample(dataset, backend):
    loader = build_train_loader(options(dataset, workers=0, token_labels=DictLabels(), reprob=0.0, backend=backend))
    assert len(loader.sampler.order(0)) == 15
    for batch in loader:
        assert batch.has_token_labels
        if backend == "nvjpeg":
            check_token_labels(batch, [loader.images.samples[i].key for i in loader.last_indices.tolist()])


def test_unknown_backend_is_a_sentence(dataset):
    with pytest.raises(VoloError, match="pytorch, dali, nvjpeg"):
        build_train_loader(options(dataset, backend="tfrecord"))
    assert BACKENDS == ("pytorch", "dali", "nvjpeg")


def test_nvjpeg_crop_sampler_is_torchvisions(monkeypatch):
    """Given the same random draws, nvJPEG's `sample_crop` picks the box torchvision's RandomResizedCrop (the PIL
    path's) picks, the central-crop fallback included: one crop-box algorithm, two random sources."""
    import torchvision.transforms as T

    from volo.data.nvjpeg_loader import sample_crop

    draws = np.random.default_rng(0).random(20_000).tolist()

    class Replay:
        def __init__(self) -> None:
            self.k = -1

        def uniform(self, a: float, b: float) -> float:
            self.k += 1
            return a + (b - a) * draws[self.k]

        def randint(self, a: int, b: int) -> int:  # inclusive, as random.Random's
            self.k += 1
            return a + min(int(draws[self.k] * (b - a + 1)), b - a)

    class _Draw:  # what `torch.empty(1)` returns: `.uniform_(a, b)` replays a draw
        def __init__(self, replay: Replay) -> None:
            self.replay = replay

        def uniform_(self, a, b) -> torch.Tensor:
            return torch.tensor([self.replay.uniform(float(a), float(b))], dtype=torch.float64)

    ratio = (3 / 4, 4 / 3)
    fallbacks = 0  # boxes spanning a whole side: 200 x 40 at scale >= 0.9 never fits 10 tries, so falls back
    for height, width in [(60, 90), (200, 40), (40, 200), (33, 33), (500, 375)]:
        for scale in [(0.08, 1.0), (0.9, 1.0)]:
            ours, theirs = Replay(), Replay()
            img = Image.new("RGB", (width, height))

            with monkeypatch.context() as m:  # torchvision's draws come from `theirs`
                m.setattr(torch, "empty", lambda *a, r=theirs, **k: _Draw(r))
                m.setattr(torch, "randint", lambda lo, hi, size, r=theirs: torch.tensor([r.randint(lo, hi - 1)]))
                for _ in range(100):
                    box = sample_crop(height, width, scale, ratio, ours)
                    assert box == tuple(T.RandomResizedCrop.get_params(img, list(scale), list(ratio)))
                    assert ours.k == theirs.k
                    fallbacks += box[2] == height or box[3] == width
    assert fallbacks > 0
