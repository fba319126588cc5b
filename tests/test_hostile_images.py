"""Hostile images: real PNG files, tiny on disk, that claim or decode to huge images (a real 30000 x 30000 PNG,
a header claiming 65000 x 65000, a 10000 x 9000 PNG that PIL itself only warns about, a zTXt bomb, a 1 x 400000
strip). Predict answers in one line; training counts them as unreadable; evaluation never substitutes a
neighbour for an unreadable image: it counts and reports it and scores only the readable ones.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import pytest
import torch
from faults import make_data
from faults.png import write_png

from volo.cli.main import main
from volo.data.dataset import ImageFolderDataset
from volo.data.decode import UnreadableImage, load_rgb
from volo.data.transforms import WholeImageTransform
from volo.models.registry import create_model
from volo.models.weights import save_weights

HOSTILE = {
    "bomb_30000.png": dict(width=30000, height=30000),  # real: every row is in the file (110 kB)
    "claims_65000.png": dict(width=65000, height=65000, rows=4),  # the header claims 4.2 gigapixels
    "big_10000x9000.png": dict(width=10000, height=9000),  # 90 Mpx: PIL only warns below 2x its limit
    "ztxt_bomb.png": dict(width=8, height=8, ztxt_bytes=16 << 20),  # a text chunk that inflates to 16 MB
    "strip_1x400000.png": dict(width=1, height=400000, bit_depth=8),  # eval resize: 256 x 102 million
}
REASONS = {
    "bomb_30000.png": "Image size (900000000 pixels) exceeds limit",
    "claims_65000.png": "Image size (4225000000 pixels) exceeds limit",
    "big_10000x9000.png": "10000 x 9000 pixels exceed the bound",
    "ztxt_bomb.png": "MAX_TEXT_CHUNK",
    "strip_1x400000.png": "1 x 400000 pixels: an aspect ratio beyond 100:1",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    files = {name: write_png(root / name, **kw) for name, kw in HOSTILE.items()}
    assert all(p.stat().st_size < 120_000 for p in files.values())
    return files


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_weights(create_model("volo_tiny", img_size=32, num_classes=4), tmp_path_factory.mktemp("w") / "m")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_load_refuses_before_decoding(hostile: dict[str, Path], name: str):
    start = time.perf_counter()
    with pytest.raises(UnreadableImage, match=re.escape(REASONS[name])):
        load_rgb(hostile[name])
    assert isinstance(UnreadableImage("x"), OSError)
    print(f"\nRELIABILITY image: {name} refused in {time.perf_counter() - start:.3f} s")


def test_a_normal_photo_still_loads(tmp_path: Path):
    path = write_png(tmp_path / "wide.png", width=2500, height=100, bit_depth=8)  # a 25:1 panorama
    assert load_rgb(path).size == (2500, 100)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_predict_is_one_line(capsys, hostile: dict[str, Path], weights: Path, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["predict", str(weights), str(hostile[name])])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"volo predict: error: Image {hostile[name]} cannot be used"), lines
    assert REASONS[name] in lines[0], lines
    print(f"\nRELIABILITY bad-input: {lines[0]}")


def test_training_counts_them_as_unreadable(tmp_path: Path, hostile: dict[str, Path]):
    data = make_data(tmp_path / "data", per_class=2)
    cls = data / "train" / "class_00"
    for name, path in hostile.items():
        os.link(path, cls / name)
    dataset = ImageFolderDataset(data / "train", WholeImageTransform(32), min_tries=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = [dataset[i] for i in range(len(dataset))]
    assert {k.rsplit("/", 1)[-1] for k in dataset.bad} == set(HOSTILE)  # each one refused (some twice)
    assert all(s.image.shape == (3, 32, 32) for s in samples)


def test_evaluation_counts_unreadable_images_and_never_substitutes(capsys, tmp_path: Path, hostile, weights):
    data = make_data(tmp_path / "data", per_class=1, val_per_class=3)  # 12 readable val images
    val = data / "val"
    before = _eval_json(capsys, weights, val)
    assert (before["images"], before["unreadable"]) == (12, 0)
    bad = [val / "class_01" / "junk.jpg", val / "class_02" / "bomb.png", val / "class_03" / "strip.png"]
    bad[0].write_bytes(os.urandom(2000))
    os.link(hostile["bomb_30000.png"], bad[1])
    os.link(hostile["strip_1x400000.png"], bad[2])
    with pytest.warns(UserWarning, match=r"3 of 15 images under .* could not be decoded and were not scored"):
        after = _eval_json(capsys, weights, val, quiet=False)
    assert (after["images"], after["unreadable"]) == (12, 3)  # not 15 with neighbours scored twice
    for key in ("top1", "top5", "loss"):  # the same images are scored: the same numbers
        assert after[key] == pytest.approx(before[key], abs=1e-6), key


def _eval_json(capsys, weights: Path, val: Path, quiet: bool = True) -> dict:
    argv = ["eval", str(weights), "--data", str(val), "--workers", "0", "--batch-size", "4", "--json"]
    if quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
    else:
        code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    return json.loads(out[-1])
