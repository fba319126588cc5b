"""Robust ImageFolder: odd image modes converted, junk skipped with counts, corrupt files replaced, and a mostly
unreadable dataset stopped with a clear error. Synthetic data is deterministic; the loader yields Batch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from volo.data.batch import Batch
from volo.data.dataset import ImageFolderDataset, scan_image_folder
from volo.data.decode import load_rgb
from volo.data.loader import LoaderConfig, build_loader
from volo.data.synthetic import make_synthetic_dataset
from volo.data.transforms import WholeImageTransform
from volo.errors import VoloError


def _rgb(seed: int, size=(40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    for c in ("a", "b", "c_empty", "d"):
        (root / c).mkdir(parents=True)
    Image.fromarray(_rgb(0)).save(root / "a" / "rgb.jpg")
    Image.fromarray(_rgb(1)[:, :, 0]).save(root / "a" / "grey.png")  # L
    Image.fromarray(_rgb(2)).convert("CMYK").save(root / "a" / "cmyk.jpg")
    rgba = np.dstack([_rgb(3), np.full((30, 40), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "b" / "alpha.png")
    Image.fromarray(_rgb(4)[:, :, 0].astype(np.uint16) * 257).save(root / "b" / "deep16.png")  # I;16
    Image.fromarray(_rgb(5)).convert("P").save(root / "b" / "palette.gif")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "c_empty" / "readme.md").write_text("empty class")
    good = root / "d" / "good.jpg"
    Image.fromarray(_rgb(6)).save(good)
    data = good.read_bytes()
    (root / "d" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "d" / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    return root


def test_scan_skips_junk_and_empty_classes_with_a_warning(messy):
    with pytest.warns(UserWarning, match=r"skipped 3 non-image file\(s\) and 1 empty class folder\(s\) \(c_empty\)"):
        classes, entries, report = scan_image_folder(messy)
    assert classes == ["a", "b", "d"]
    assert [e.key for e in entries if e.label == 1] == ["b/alpha.png", "b/deep16.png", "b/palette.gif"]
    assert (report.images, report.classes, report.skipped_files, report.empty_classes) == (9, 3, 3, ["c_empty"])


def test_every_mode_becomes_rgb(messy):
    for name in ("a/grey.png", "a/cmyk.jpg", "b/alpha.png", "b/deep16.png", "b/palette.gif"):
        img = load_rgb(messy / name)
        assert img.mode == "RGB" and img.size == (40, 30), name
    grey = np.asarray(load_rgb(messy / "a/grey.png"))
    np.testing.assert_array_equal(grey[:, :, 0], _rgb(1)[:, :, 0])
    deep = np.asarray(load_rgb(messy / "b/deep16.png"))[:, :, 0]
    np.testing.assert_array_equal(deep, _rgb(4)[:, :, 0])  # x * 257 / 65535 * 255 rounds back to x
    alpha = np.asarray(load_rgb(messy / "b/alpha.png")).astype(int)
    expected = (_rgb(3).astype(int) * 128 + 255 * 127 + 127) // 255  # composited onto white
    assert np.abs(alpha - expected).max() <= 1


def test_corrupt_images_are_replaced_and_counted(messy):
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(messy, WholeImageTransform(32))
    keys = [e.key for e in ds.entries]
    i_trunc, i_garbage = keys.index("d/truncated.jpg"), keys.index("d/garbage.jpg")
    with pytest.warns(UserWarning, match="Unreadable image"):
        s = ds[i_garbage]
    assert s.index == keys.index("d/good.jpg") and s.label == 2 and s.image.shape == (3, 32, 32)
    with pytest.warns(UserWarning, match="Unreadable image"):
        s = ds[i_trunc]
    assert s.index == (i_trunc + 1) % len(keys) or keys[s.index] == "d/good.jpg"
    assert ds.bad == ["d/garbage.jpg", "d/truncated.jpg"]


def test_mostly_unreadable_dataset_stops_with_a_clear_error(tmp_path):
    root = tmp_path / "broken"
    (root / "x").mkdir(parents=True)
    Image.fromarray(_rgb(0)).save(root / "x" / "ok.jpg")
    for i in range(30):
        (root / "x" / f"bad{i:02d}.jpg").write_bytes(b"\xff\xd8 broken")
    ds = ImageFolderDataset(root, WholeImageTransform(32), min_tries=20)
    with pytest.warns(UserWarning), pytest.raises(VoloError, match=r"of \d+ images read from .* were unreadable"):
        for i in range(len(ds)):
            ds[i]


def test_missing_or_empty_folder_is_a_volo_error(tmp_path):
    with pytest.raises(VoloError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(VoloError, match="No images found"):
        scan_image_folder(tmp_path / "empty")


def test_synthetic_dataset_is_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", classes=3, per_class=2, size=48, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", classes=3, per_class=2, size=48, seed=5)
    c = make_synthetic_dataset(tmp_path / "c", classes=3, per_class=2, size=48, seed=6)

    def digest(root: Path) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.jpg"))]

    assert a.images == 6 and a.classes == ["class_00", "class_01", "class_02"]
    assert digest(a.root) == digest(b.root) and digest(a.root) != digest(c.root)
    sizes = {Image.open(p).size for p in sorted(a.root.rglob("*.jpg"))}
    assert len(sizes) > 1 and any(w != h for w, h in sizes)


def test_loader_collates_into_batch(tmp_path):
    root = make_synthetic_dataset(tmp_path / "s", classes=2, per_class=3, size=40).root
    ds = ImageFolderDataset(root, WholeImageTransform(32))
    loader = build_loader(ds, LoaderConfig(batch_size=4, num_workers=1, drop_last=False), sampler=range(6))
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 2]
    b = batches[0]
    assert isinstance(b, Batch) and b.images.shape == (4, 3, 32, 32) and b.labels.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(b.label_transform, torch.eye(3)[:2].expand(4, 2, 3))
    assert b.label_values is None and not b.has_token_labels
