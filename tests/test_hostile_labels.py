"""Hostile or broken token-label stores, and label provenance: real stores on disk, damaged the way it happens.

Every case writes a real store (`write_shard` / `write_manifest`, or a real `volo label` run of a tiny teacher),
then damages or swaps real files: a manifest with a missing or unknown key, a JSON list, binary bytes; a shard
name that leads outside the store; class ids beyond num_classes; a resume with another teacher's weights; a
store checked against another folder whose images have the same names.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from volo.cli.main import main
from volo.data.batch import Batch
from volo.data.dataset import ImageFolderDataset
from volo.data.synthetic import make_synthetic_dataset
from volo.data.targets import build_targets
from volo.data.transforms import WholeImageTransform
from volo.errors import VoloError
from volo.labeling.check import check_labels
from volo.labeling.generate import GenerateConfig, generate_labels
from volo.labeling.source import open_label_store
from volo.labeling.store import MANIFEST, ShardedLabelStore, StoreMeta, write_manifest, write_shard
from volo.labeling.teacher import load_teacher

K, TOPK, HW = 4, 2, 2


def make_store(root: Path, ids_high: int = K, n: int = 6) -> Path:
    """A real one-shard store of `n` images; ids drawn from [0, ids_high) (ids_high > K: out of range)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, TOPK, HW, HW)).astype(np.float16)
    ids = rng.integers(0, K, size=(n, TOPK, HW, HW)).astype(np.int16)
    if ids_high > K:
        ids[n - 1, 0, 1, 1] = ids_high - 1  # one cell of the last image
    record = write_shard(root, 0, [f"c/{i}.jpg" for i in range(n)], values, ids, [])
    write_manifest(root, StoreMeta(K, TOPK, (HW, HW), "test", 32), [record])
    return root


def edit_manifest(root: Path, edit) -> None:
    obj = json.loads((root / MANIFEST).read_text())
    obj = edit(obj)
    (root / MANIFEST).write_text(json.dumps(obj))


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    print(f"\nRELIABILITY bad-input: {text}")
    return text


def _drop(key):
    def edit(obj):
        del obj[key]
        return obj

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_drop("num_classes"), "keys ['num_classes'] are missing"),
        (lambda o: {**o, "evil": 1}, "keys ['evil'] are unknown"),
        (lambda o: [o], "is a JSON list, expected an object"),
        (lambda o: {**o, "num_classes": "four"}, "num_classes is str"),
        (lambda o: {**o, "map_size": [2]}, "map_size [2] is not two positive integers"),
        (lambda o: {**o, "topk": 0}, "topk 0"),
        (lambda o: {**o, "shards": {"a": 1}}, "shards is dict"),
        (lambda o: {**o, "shards": [{**o["shards"][0], "extra": 1}]}, "shards[0].keys ['extra'] are unknown"),
        (lambda o: {**o, "shards": [{**o["shards"][0], "keys": [1, 2]}]}, "shards[0].keys holds non-strings"),
        (lambda o: {**o, "shards": o["shards"] * 2}, "lists 6 image key(s) twice"),
    ],
)
def test_malformed_manifest_is_one_line(tmp_path: Path, edit, fragment: str):
    root = make_store(tmp_path / "store")
    edit_manifest(root, edit)
    with pytest.raises(VoloError) as err:
        open_label_store(root)
    assert fragment in one_line(err) and str(root / MANIFEST) in str(err.value)


def test_binary_manifest_is_one_line(tmp_path: Path, capsys):
    root = make_store(tmp_path / "store")
    (root / MANIFEST).write_bytes(bytes(range(256)) * 4)
    with pytest.raises(VoloError, match="Cannot read the token-label manifest") as err:
        ShardedLabelStore(root)
    one_line(err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["label", "--verify", str(root)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("volo label: error: Cannot read"), lines


def test_shard_name_cannot_leave_the_store(tmp_path: Path):
    root = make_store(tmp_path / "store")
    outside = make_store(tmp_path / "outside")  # real, readable arrays outside the store
    (outside / "shard-00000.values.npy").rename(outside / "x.values.npy")
    (outside / "shard-00000.ids.npy").rename(outside / "x.ids.npy")
    edit_manifest(root, lambda o: {**o, "shards": [{**o["shards"][0], "name": "../outside/x"}]})
    with pytest.raises(VoloError, match=r"name '\.\./outside/x' is not of the form shard-NNNNN") as err:
        ShardedLabelStore(root).get("c/0.jpg")
    one_line(err)
    # a record file with such a name is not a finished shard either (the shard is redone on resume)
    from volo.labeling.store import read_shard_record

    rec = json.loads((root / "shard-00000.json").read_text())
    (root / "shard-00000.json").write_text(json.dumps({**rec, "name": "../outside/x"}))
    assert read_shard_record(root, 0) is None


def test_out_of_range_class_ids_are_found_by_verify_get_and_targets(tmp_path: Path, capsys):
    root = make_store(tmp_path / "store", ids_high=K + 3)  # one id == 6 with 4 classes
    store = ShardedLabelStore(root)
    problems = store.verify()
    assert problems == ["shard-00000: class ids span [0, 6], outside [0, 4)"], problems
    code = main(["label", "--verify", str(root)])
    out = capsys.readouterr().out
    assert code == 1 and "class ids span [0, 6]" in out and "1 problem(s)" in out, out
    assert store.get("c/0.jpg").ids.max() < K  # sound rows still read
    with pytest.raises(VoloError, match=r"'c/5.jpg' .* class ids in \[0, 6\], outside \[0, 4\)") as err:
        store.get("c/5.jpg")
    one_line(err)
    # the targets refuse such ids on both paths (dense: index error; sparse: silently the next token's class)
    ids = torch.from_numpy(np.asarray(np.load(root / "shard-00000.ids.npy"))).long()
    values = torch.from_numpy(np.asarray(np.load(root / "shard-00000.values.npy")))
    batch = Batch(
        images=torch.zeros(6, 3, 32, 32),
        labels=torch.zeros(6, dtype=torch.long),
        label_transform=torch.eye(2, 3).expand(6, 2, 3).clone(),
        label_values=values,
        label_ids=ids,
    )
    for method in ("dense", "sparse"):
        with pytest.raises(VoloError, match=r"class ids span \[0, 6\] but the model has 4 classes"):
            build_targets(batch, K, method=method)
    batch.label_ids = ids.clamp(max=K - 1)
    assert build_targets(batch, K, method="sparse").tokens.shape == (6, 4, K)


# -- provenance: the teacher's weights and the images ---------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("prov") / "train", classes=2, per_class=3, size=40).root


def gen(data: Path, out: Path, teacher):
    cfg = GenerateConfig(data, out, topk=2, batch_size=4, shard_size=2, num_workers=0, progress=False)
    return generate_labels(cfg, teacher)


def test_resume_with_another_teachers_weights_is_refused(data: Path, tmp_path: Path):
    torch.manual_seed(0)
    teacher = load_teacher("volo_tiny", num_classes=2, input_size=32)
    out = tmp_path / "store"
    gen(data, out, teacher)
    assert len(ShardedLabelStore(out).meta.teacher_sha256) == 64
    (out / MANIFEST).unlink()
    (out / "shard-00002.json").unlink()  # as if killed before the last shard
    torch.manual_seed(1)  # same spec, same architecture, other weights
    other = load_teacher("volo_tiny", num_classes=2, input_size=32)
    with pytest.raises(VoloError, match="started with other teacher weights") as err:
        gen(data, out, other)
    one_line(err)
    assert not (out / "shard-00002.json").exists()  # nothing of the second teacher was written
    report = gen(data, out, teacher)  # the same weights resume
    assert (report.shards_written, report.shards_skipped) == (1, 2)


def test_store_made_for_another_folder_is_caught(data: Path, tmp_path: Path):
    teacher = load_teacher("volo_tiny", num_classes=2, input_size=32)
    out = tmp_path / "store"
    gen(data, out, teacher)
    store = open_label_store(out)
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)  # the same images elsewhere: accepted
    assert check_labels(ImageFolderDataset(copy, WholeImageTransform(32)), store).images == 6
    other = make_synthetic_dataset(tmp_path / "other", classes=2, per_class=3, size=40, seed=7).root
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*.*")) == sorted(
        p.relative_to(data).as_posix() for p in data.rglob("*.*")
    )  # same class folders and file names, other photos
    with pytest.raises(VoloError, match="are not the files the label store") as err:
        check_labels(ImageFolderDataset(other, WholeImageTransform(32)), store)
    one_line(err)
