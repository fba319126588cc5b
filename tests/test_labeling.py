"""Label generation -> store -> check -> aligned targets -> loss, end to end; store format, public layout, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import volo
from volo.cli.main import main as cli_main
from volo.data.dataset import ImageFolderDataset
from volo.data.loader import LoaderConfig, build_loader
from volo.data.synthetic import make_synthetic_dataset
from volo.data.targets import build_targets
from volo.data.transforms import TrainTransform, TrainTransformConfig, WholeImageTransform
from volo.errors import VoloError
from volo.labeling.check import check_labels
from volo.labeling.generate import GenerateConfig, generate_labels
from volo.labeling.public import PublicLabelStore
from volo.labeling.source import open_label_store
from volo.labeling.store import ShardedLabelStore
from volo.labeling.teacher import load_teacher
from volo.training.loss import TokenLabelingLoss
from volo.training.mixtoken import mix_targets, sample_mix_box

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2-224"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "train", classes=3, per_class=5, size=72).root


def gen(data: Path, out: Path, teacher, **kw) -> object:
    cfg = GenerateConfig(data, out, topk=3, batch_size=4, shard_size=4, num_workers=0, progress=False, **kw)
    return generate_labels(cfg, teacher)


def test_generated_labels_are_the_teachers_topk_over_the_whole_image(data, tmp_path):
    torch.manual_seed(0)
    teacher = load_teacher("volo_tiny", num_classes=3, input_size=64)
    report = gen(data, tmp_path / "store", teacher)
    assert (report.images, report.shards_written, report.shards_skipped) == (15, 4, 0)
    store = open_label_store(tmp_path / "store")
    assert isinstance(store, ShardedLabelStore)
    assert store.map_size == (4, 4) and store.topk == 3 and store.num_classes == 3 and len(store) == 15
    assert store.meta.classes == ["class_00", "class_01", "class_02"]
    assert store.verify() == []
    # recompute one image by hand: whole image squashed to 64 x 64, aux-head token logits, top-3
    ds = ImageFolderDataset(data, WholeImageTransform(64))
    key = ds.entries[7].key
    x = ds[7].image[None]
    with torch.no_grad():
        _, tok = teacher.model.forward_head_tokens(teacher.model.forward_tokens(teacher.model.forward_stem(x)))
    top = tok[0].reshape(4, 4, 3).permute(2, 0, 1).topk(3, dim=0)
    label = store.get(key)
    np.testing.assert_allclose(label.values.astype(np.float32), top.values.half().float().numpy(), atol=0)
    np.testing.assert_array_equal(label.ids, top.indices.numpy())
    assert label.ids.dtype == np.int16


def test_resume_skips_finished_shards_and_ranks_split_the_work(data, tmp_path):
    teacher = load_teacher("volo_tiny", num_classes=3, input_size=32)
    out = tmp_path / "store"
    r1 = gen(data, out, teacher, rank=1, world_size=2, wait_timeout_s=0)
    assert r1.shards_written == 2 and r1.manifest is None  # shards 1 and 3
    (out / "shard-00003.json").unlink()  # as if killed before finishing shard 3
    with pytest.raises(VoloError, match=r"1 shard\(s\) .* still unfinished \(e.g. shard 3\)"):
        gen(data, out, teacher, rank=0, world_size=2, wait_timeout_s=0)  # writes shards 0 and 2, then waits
    assert (out / "shard-00000.json").is_file() and (out / "shard-00002.json").is_file()
    r = gen(data, out, teacher, rank=1, world_size=2, wait_timeout_s=0)
    assert (r.shards_written, r.shards_skipped) == (1, 1)
    r = gen(data, out, teacher)
    assert (r.shards_written, r.shards_skipped) == (0, 4) and r.manifest is not None
    assert ShardedLabelStore(out).verify() == []
    with pytest.raises(VoloError, match="other settings"):
        gen(data, out, load_teacher("volo_tiny", num_classes=3, input_size=48))


def test_verify_detects_a_changed_shard(data, tmp_path):
    gen(data, tmp_path / "s", load_teacher("volo_tiny", num_classes=3, input_size=32))
    path = tmp_path / "s" / "shard-00001.values.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    problems = ShardedLabelStore(tmp_path / "s").verify()
    assert problems == ["shard-00001.values.npy: checksum mismatch (file changed or truncated)"]
    assert cli_main(["label", "--verify", str(tmp_path / "s")]) == 1


def test_check_names_missing_images_and_class_mismatch(data, tmp_path):
    gen(data, tmp_path / "s", load_teacher("volo_tiny", num_classes=3, input_size=32))
    store = ShardedLabelStore(tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    dropped = manifest["shards"][0]["keys"].pop(0)
    manifest["shards"][0]["keys"].append("class_00/not_there.jpg")
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    ds = ImageFolderDataset(data, WholeImageTransform(32))
    with pytest.raises(VoloError, match=rf"1 of 15 images .* have no token label \(e.g. '{dropped}'\)"):
        check_labels(ds, ShardedLabelStore(tmp_path / "s"))
    wrong = make_synthetic_dataset(tmp_path / "four", classes=4, per_class=1, size=40).root
    gen(wrong, tmp_path / "s4", load_teacher("volo_tiny", num_classes=4, input_size=32))
    with pytest.raises(VoloError, match="made for 4 classes but .* has 3 class folders"):
        ds4 = ImageFolderDataset(data, WholeImageTransform(32))
        s4 = ShardedLabelStore(tmp_path / "s4")
        s4.index = {e.key: (0, 0) for e in ds4.entries}  # every image "present", classes differ
        check_labels(ds4, s4)
    assert check_labels(ImageFolderDataset(data, WholeImageTransform(32)), store).images == 15


def test_public_layout_reader(data, tmp_path):
    ds = ImageFolderDataset(data, WholeImageTransform(32))
    root = tmp_path / "public"
    g = torch.Generator().manual_seed(0)
    saved = {}
    for e in ds.entries:
        values = torch.randn(5, 6, 6, generator=g)
        ids = torch.stack([torch.randperm(3, generator=g).repeat(2)[:5] for _ in range(36)]).T.reshape(5, 6, 6)
        t = torch.stack([values, ids.float()]).half()
        path = root / Path(e.key).with_suffix(".pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(t, path)
        saved[e.key] = t
    store = open_label_store(root)
    assert isinstance(store, PublicLabelStore) and store.topk == 5 and store.map_size == (6, 6)
    key = ds.entries[4].key
    label = store.get(key)
    np.testing.assert_array_equal(label.values, saved[key][0].numpy())
    np.testing.assert_array_equal(label.ids, saved[key][1].numpy().astype(np.int16))
    assert check_labels(ds, store).images == 15
    (root / Path(ds.entries[2].key).with_suffix(".pt")).unlink()
    store = PublicLabelStore(root)
    with pytest.raises(VoloError, match="1 of 15 images"):
        check_labels(ImageFolderDataset(data, WholeImageTransform(32)), store)
    torch.save(torch.zeros(3, 3), root / Path(ds.entries[3].key).with_suffix(".pt"))
    with pytest.raises(VoloError, match=r"holds \(3, 3\); the public layout is a \[2, k, h, w\] tensor"):
        store.get(ds.entries[3].key)


def _train_one_step(data: Path, store_path: Path, img_size: int, num_classes: int) -> dict:
    store = open_label_store(store_path)
    ds = ImageFolderDataset(data, TrainTransform(TrainTransformConfig(img_size=img_size)), labels=store)
    check_labels(ds, store)
    loader = build_loader(ds, LoaderConfig(batch_size=4, num_workers=0), shuffle=True)
    batch = next(iter(loader))
    targets = build_targets(batch, num_classes)
    model = volo.create_model("volo_tiny", img_size=img_size, num_classes=num_classes).train()
    mix = sample_mix_box((img_size // 16, img_size // 16), np.random.default_rng(0))
    out = model(batch.images, mix_box=mix.box)
    parts = TokenLabelingLoss()(out, mix_targets(targets, mix.lam))
    parts.total.backward()
    return {"loss": parts, "targets": targets, "batch": batch, "grad": model.aux_head.weight.grad}


def test_end_to_end_synthetic_cli_to_loss(data, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "teacher.safetensors"
    volo.save_weights(volo.create_model("volo_tiny", img_size=64, num_classes=3), ckpt)
    rc = cli_main(
        [
            "label",
            "--data",
            str(data),
            "--teacher",
            str(ckpt),
            "--out",
            str(tmp_path / "store"),
            "--topk",
            "2",
            "--batch-size",
            "4",
            "--shard-size",
            "8",
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    r = _train_one_step(data, tmp_path / "store", 64, 3)
    assert r["batch"].label_values.shape == (4, 2, 4, 4)
    assert r["targets"].tokens.shape == (4, 16, 3)
    torch.testing.assert_close(r["targets"].tokens.sum(-1), torch.ones(4, 16))
    assert torch.isfinite(r["loss"].total) and r["grad"].abs().sum() > 0


def test_timm_teacher_classifier_per_location(data, tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    teacher = load_teacher("timm:resnet18", num_classes=3, input_size=64)
    x = torch.randn(2, 3, 64, 64)
    dense = teacher.dense_logits(x)
    assert dense.shape == (2, 3, 2, 2)
    feats = teacher.model.forward_features(x)  # (2, 512, 2, 2)
    fc = teacher.model.fc
    expected = torch.einsum("bchw,kc->bkhw", feats, fc.weight) + fc.bias[None, :, None, None]
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=1e-5)
    gen(data, tmp_path / "s", teacher)
    assert ShardedLabelStore(tmp_path / "s").map_size == (2, 2)


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="imagenette2-224 not present")
def test_end_to_end_on_real_photos(tmp_path):
    """A few dozen Imagenette photos: label with a tiny VOLO teacher, check, targets, loss."""
    src = IMAGENETTE / "train"
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())[:3]
    root = tmp_path / "train"
    for c in classes:
        (root / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:8]:
            (root / c / f.name).symlink_to(f)
    torch.manual_seed(0)
    teacher = load_teacher("volo_tiny", num_classes=3, input_size=96)
    report = gen(root, tmp_path / "store", teacher)
    assert report.images == 24 and report.unreadable == 0
    r = _train_one_step(root, tmp_path / "store", 96, 3)
    assert r["batch"].label_values.shape == (4, 3, 6, 6)
    assert torch.isfinite(r["loss"].total) and r["grad"].abs().sum() > 0
