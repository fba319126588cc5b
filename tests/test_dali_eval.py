"""DALI evaluation loader (CPU-only pipelines, device_id=None): parity with `EvalTransform`, exact-once sharding,
the same top-1 through `evaluate()` and `volo eval --loader dali`, and one-line errors.

The DALI tests skip where `nvidia.dali` is not installed; the missing-DALI test runs everywhere (it hides DALI).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from volo.cli.main import main
from volo.data.dataset import ImageFolderDataset
from volo.data.synthetic import make_synthetic_dataset
from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.models import create_model
from volo.models.variants import EvalConfig
from volo.training.config import load_config
from volo.training.data import build_eval_loader, build_train_data, spread_subset
from volo.training.evaluate import evaluate

try:
    import nvidia.dali  # noqa: F401

    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="needs nvidia-dali (pip install nvidia-dali-cuda130)")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N = 17  # 3 classes x 5 generated + a greyscale and a CMYK JPEG: not a multiple of 2, 3, 2 x 4 or 3 x 4
SIZE, BATCH = 32, 4
STEP = 1 / (255 * 0.225)  # one 8-bit grey level in normalised units (std ~0.225): ~0.0174


def cpu(rank: int = 0, world_size: int = 1) -> DistInfo:
    return DistInfo(rank, rank, world_size, torch.device("cpu"), None)


def make_folder(root: Path) -> Path:
    """17 JPEGs of varied non-square sizes (about 40 x 40 to 70 x 70) in 3 classes, one greyscale, one CMYK."""
    make_synthetic_dataset(root, classes=3, per_class=5, size=50, seed=3)
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (15, 21, 3)), np.ones((3, 3, 1))).astype(np.uint8)  # 45 x 63
    Image.fromarray(smooth).convert("L").save(root / "class_00" / "grey.jpg", quality=90)
    Image.fromarray(smooth.transpose(1, 0, 2)).convert("CMYK").save(root / "class_01" / "cmyk.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("dali_eval") / "val")


def eval_batches(root: Path, loader: str, crop_pct: float = 0.96, interpolation: str = "bicubic"):
    """(loader, classes) from `build_eval_loader` on one CPU rank: PyTorch in-process, DALI with one thread."""
    ev = EvalConfig(crop_pct, interpolation)
    workers = 0 if loader == "pytorch" else 1
    return build_eval_loader(root, SIZE, crop_pct, ev, BATCH, workers, cpu(), None, loader)


@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize(
    ("interpolation", "crop_pct"), [("bicubic", 0.96), ("bilinear", 0.875), ("bicubic", 1.15)]
)  # 1.15: the crop is larger than the resized short side, so both pad with black
def test_batches_match_eval_transform_image_by_image(folder, interpolation, crop_pct):
    ref_loader, ref_classes = eval_batches(folder, "pytorch", crop_pct, interpolation)
    dali_loader, dali_classes = eval_batches(folder, "dali", crop_pct, interpolation)
    ref, dali = list(ref_loader), list(dali_loader)
    assert dali_classes == ref_classes == ["class_00", "class_01", "class_02"]
    assert [len(b) for b in dali] == [len(b) for b in ref] == [4, 4, 4, 4, 1] and len(dali_loader) == 5
    assert torch.equal(torch.cat([b.labels for b in dali]), torch.cat([b.labels for b in ref]))
    assert all(b.labels.dtype == torch.int64 and b.label_transform.shape == (len(b), 2, 3) for b in dali)
    a, b = torch.cat([x.images for x in dali]), torch.cat([x.images for x in ref])
    assert a.shape == b.shape == (N, 3, SIZE, SIZE) and a.dtype == torch.float32
    # Same output sizes, crop offsets and decoder (libjpeg-turbo, greyscale and CMYK decode to the same RGB);
    # only the resampling differs: DALI's antialiased cubic / linear filters vs PIL's, which also rounds and
    # clips to 8 bits between its horizontal and vertical passes. Measured here (3 settings): per-image mean
    # |diff| at most 0.25 grey level; bilinear at most 1 level anywhere; bicubic 25-26 of 52,224 values over
    # 3.5 levels and up to 15 levels, all at the 0-to-255 block edges of the random-block images, where cubic
    # ringing is clipped. A one-pixel shift of either axis costs 4.5 levels or more per image, so these bounds
    # admit the kernels and catch any geometry error.
    diff = (a - b).abs()
    assert diff.mean(dim=(1, 2, 3)).max() < 0.5 * STEP
    assert (diff > 3.5 * STEP).float().mean() < 0.002 and diff.max() < 20 * STEP
    shift_x = (a[..., 1:] - b[..., :-1]).abs().mean(dim=(1, 2, 3))
    shift_y = (a[..., 1:, :] - b[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    assert min(shift_x.min(), shift_y.min()) > 3 * STEP  # the check has teeth


@pytest.mark.dali
@needs_dali
def test_real_photos_match_at_224(imagenette):
    """64 Imagenette photos at VOLO-D1's settings (224 px, crop 0.96, bicubic): measured per-image mean |diff| at
    most 0.21 grey level, 3.3e-5 of the values over 3.5 levels (9 at most)."""
    ev = EvalConfig(0.96, "bicubic")
    images = []
    for loader in ("pytorch", "dali"):
        items, _ = build_eval_loader(imagenette / "val", 224, 0.96, ev, 16, 1, cpu(), 64, loader)
        images.append(torch.cat([b.images for b in items]))
    diff = (images[0] - images[1]).abs()
    assert diff.shape == (64, 3, 224, 224)
    assert diff.mean(dim=(1, 2, 3)).max() < 0.5 * STEP and (diff > 3.5 * STEP).float().mean() < 0.001


@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize(("world_size", "max_images"), [(2, None), (3, None), (3, 11), (4, 3)])
def test_ranks_read_every_image_exactly_once(folder, world_size, max_images):
    """The PyTorch path's very images (spread_subset) and shards (ShardSampler: r, r + W, ...), short last batch."""
    subset = spread_subset(ImageFolderDataset(folder, transform=None), max_images)
    if max_images is None:
        expected = [str(folder / e.key) for e in subset.entries]
    else:
        expected = [str(folder / subset.dataset.entries[i].key) for i in subset.indices]
    read = []
    for rank in range(world_size):
        dist = cpu(rank, world_size)
        items, _ = build_eval_loader(folder, SIZE, 0.96, EvalConfig(), BATCH, 1, dist, max_images, "dali")
        batches = [[items.files[i] for i in items.last_indices.tolist()] for _ in items]  # read as each arrives
        assert len(batches) == len(items) and all(len(b) == BATCH for b in batches[:-1])
        mine = [f for b in batches for f in b]
        assert mine == expected[rank::world_size]
        read += mine
    assert len(read) == len(set(read)) == len(expected) == (max_images or N)
    assert sorted(read) == sorted(expected)


class NearestMean(nn.Module):
    """A training-free classifier: minus the squared distance of the 4 x 4-pooled image to each class's mean."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: int):
        super().__init__()
        feats = self.features(images)
        self.register_buffer("means", torch.stack([feats[labels == c].mean(0) for c in range(classes)]))

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 4).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(torch.cdist(self.features(x), self.means) ** 2)


@pytest.mark.dali
@needs_dali
def test_evaluate_gives_the_same_top1(folder):
    ref, dali = list(eval_batches(folder, "pytorch")[0]), list(eval_batches(folder, "dali")[0])
    nearest = NearestMean(torch.cat([b.images for b in ref]), torch.cat([b.labels for b in ref]), 3)
    torch.manual_seed(0)
    tiny = create_model("volo_tiny", img_size=SIZE, num_classes=3).eval()  # untrained; its predictions vary
    for net in (nearest, tiny):
        expected, got = evaluate(net, ref, torch.device("cpu")), evaluate(net, dali, torch.device("cpu"))
        with torch.no_grad():
            predicted = [torch.cat([net(b.images) for b in batches]).argmax(1) for batches in (ref, dali)]
        assert len(set(predicted[0].tolist())) > 1 and torch.equal(predicted[0], predicted[1])  # image by image
        # measured: top-1 64.7% (nearest mean) and 35.3% (volo_tiny) from both; losses 3.5143 vs 3.5151, and
        # 1.09910 vs 1.09905 (the pixel differences above, through these models)
        assert got.images == expected.images == N
        assert got.top1 == expected.top1 and got.loss == pytest.approx(expected.loss, rel=1e-3)


@pytest.mark.dali
@needs_dali
def test_volo_eval_loader_dali_json(folder, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": create_model("volo_tiny", img_size=SIZE, num_classes=3).state_dict()}, weights)
    args = ["eval", str(weights), "--data", str(folder.parent), "--batch-size", str(BATCH), "--json"]
    results = {}
    for loader, workers in (("pytorch", "0"), ("dali", "1")):
        assert main([*args, "--loader", loader, "--workers", workers]) == 0
        results[loader] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["dali"]["images"] == results["pytorch"]["images"] == N
    assert results["dali"]["top1"] == results["pytorch"]["top1"]
    assert results["dali"]["loss"] == pytest.approx(results["pytorch"]["loss"], rel=1e-3)


@pytest.mark.dali
@needs_dali
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_is_a_one_line_error_naming_it(folder, tmp_path, damage):
    root = shutil.copytree(folder, tmp_path / "val")
    good = (root / "class_00" / "img_0000.jpg").read_bytes()
    bad = root / "class_02" / "zz_bad.jpg"  # the last image: read from a prefetched batch
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG" * 20 if damage == "garbage" else good[: len(good) // 2])
    items, _ = eval_batches(root, "dali")
    with pytest.raises(VoloError, match="could not read .*zz_bad.jpg .*--loader pytorch") as err:
        list(items)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="Unreadable image .*zz_bad.jpg"):  # the fallback it suggests goes on
        assert sum(len(b) for b in eval_batches(root, "pytorch")[0]) == N + 1


def test_missing_dali_and_unknown_loader_are_one_line_errors(folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # `import nvidia.dali` now raises ImportError
    pattern = r"pip install nvidia-dali-cuda130` \(or `pip install volo\[dali\]`\), or evaluate with --loader pytorch"
    with pytest.raises(VoloError, match=pattern) as err:
        eval_batches(folder, "dali")
    assert "\n" not in str(err.value)
    assert main(["eval", "never_loaded.pth", "--data", str(folder), "--loader", "dali"]) == 2
    out = capsys.readouterr().err.strip()
    assert "\n" not in out and out.startswith("volo eval: error: The DALI evaluation loader") and "pip install" in out
    with pytest.raises(VoloError, match="Evaluation loader 'ffcv' is unknown; choose one of pytorch, dali"):
        eval_batches(folder, "ffcv")


@pytest.mark.dali
@needs_dali
def test_training_with_data_loader_dali_evaluates_with_dali(folder, tmp_path):
    from volo.data.dali_eval import DaliEvalLoader

    make_synthetic_dataset(tmp_path / "train", classes=3, per_class=4, size=40, seed=0)
    shutil.copytree(folder, tmp_path / "val")
    settings = ["model.num_classes=3", f"model.img_size={SIZE}", "token_labels.size=null", "train.batch_size=4"]
    settings += [f"data.path={tmp_path}", "data.eval_batch_size=4"]
    reference = build_train_data(load_config("debug", settings), cpu(), 4).eval_loader
    labels = torch.cat([b.labels for b in reference])
    for loader, kind in (("dali", DaliEvalLoader), ("nvjpeg", DataLoader)):  # nvjpeg keeps the PyTorch eval path
        data = build_train_data(load_config("debug", [*settings, f"data.loader={loader}"]), cpu(), 4)
        assert isinstance(data.eval_loader, kind)
        assert torch.equal(torch.cat([b.labels for b in data.eval_loader]), labels) and len(labels) == N
    data = build_train_data(load_config("debug", [*settings, "data.loader=dali", "data.max_val_images=5"]), cpu(), 4)
    assert sum(len(b) for b in data.eval_loader) == 5
