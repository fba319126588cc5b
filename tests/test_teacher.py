"""A timm CNN trained as a teacher by `volo train`, then `volo label` with its per-location classifier.

Two classes that differ only in colour (a red or a blue square on grey), so a few epochs make a CNN whose
classifier, applied per cell, says "red" where the red square is and "blue" where the blue one is: the label map of
an image holding both squares varies across its cells, in the right places.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from volo.cli.main import main
from volo.errors import VoloError
from volo.labeling.quality import TeacherQuality
from volo.labeling.store import ShardedLabelStore
from volo.labeling.teacher import load_teacher
from volo.labeling.teacher_net import TimmTeacherNet

pytest.importorskip("timm")

SIZE = 96  # test_resnet: stride 32, a 3 x 3 map


def _square(colour, corner, rng, size=SIZE, side=40):
    arr = np.full((size, size, 3), 128, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
    y, x = corner
    arr[y : y + side, x : x + side] = colour
    return arr


def _dataset(root, per_class=16):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 4)):
        for name, colour in (("blue", (20, 20, 230)), ("red", (230, 20, 20))):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                corner = rng.integers(0, SIZE - 40, 2)
                Image.fromarray(_square(colour, corner, rng)).save(root / split / name / f"{i}.png")


@pytest.mark.timeout(600)
def test_timm_teacher_trains_and_labels_maps_that_follow_the_object(tmp_path, capsys):
    _dataset(tmp_path / "data")
    args = ["train", "debug", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--name", "t"]
    for item in (
        "model.name=timm:test_resnet",
        f"model.img_size={SIZE}",
        "model.num_classes=2",
        "token_labels.size=null",
        "token_labels.mixtoken=false",
        "token_labels.dense_weight=0",
        "schedule.epochs=4",
        "schedule.warmup_epochs=0",
        "optim.lr_base=0.3",
        "train.batch_size=8",
        "train.progress=false",
        "data.scale_min=0.5",
    ):
        args += ["--set", item]
    assert main(args) == 0
    weights = tmp_path / "runs" / "t" / "weights" / "final.safetensors"
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["arch"] == {"timm": "test_resnet", "img_size": SIZE, "num_classes": 2}
    assert meta["classes"] == ["blue", "red"]
    result = json.loads((tmp_path / "runs" / "t" / "result.json").read_text())
    assert result["metrics"]["val_images"] == 8

    # An image with the blue square top-left and the red one bottom-right: the per-location map follows them.
    rng = np.random.default_rng(1)
    both = _square((20, 20, 230), (0, 0), rng)
    both[SIZE - 40 :, SIZE - 40 :] = (230, 20, 20)
    mixed = tmp_path / "mixed" / "blue"
    mixed.mkdir(parents=True)
    Image.fromarray(both).save(mixed / "both.png")
    Image.fromarray(_square((20, 20, 230), (28, 28), rng)).save(mixed / "blue_only.png")
    (tmp_path / "mixed" / "red").mkdir()
    Image.fromarray(_square((230, 20, 20), (28, 28), rng)).save(tmp_path / "mixed" / "red" / "red_only.png")
    capsys.readouterr()
    out = tmp_path / "labels"
    label = ["label", "--data", str(tmp_path / "mixed"), "--teacher", str(weights), "--out", str(out)]
    assert main([*label, "--topk", "2", "--workers", "0", "--no-progress"]) == 0
    store = ShardedLabelStore(out)
    assert tuple(store.meta.map_size) == (3, 3)
    top = store.get("blue/both.png")
    cells = top.ids[0]  # (3, 3) top-1 class per cell (0 blue, 1 red)
    assert cells[0, 0] == 0 and cells[2, 2] == 1, cells
    quality = json.loads((out / "teacher_quality.json").read_text())["summary"]
    assert quality["images"] == 3 and quality["pooled_agreement_pct"] is not None
    assert quality["varying_maps_pct"] >= 100.0 / 3  # the two-square image's map varies
    # the teacher loads from its export alone (name, size and classes from the JSON), with ImageNet mean/std
    teacher = load_teacher(str(weights))
    assert (teacher.kind, teacher.input_size, teacher.num_classes) == ("timm", SIZE, 2)


def test_timm_teacher_net_shapes_and_refusals():
    net = TimmTeacherNet("timm:test_resnet", 64, 5)
    out = net.train()(torch.randn(2, 3, 64, 64))
    assert out.cls_logits.shape == (2, 5) and out.token_logits.shape == (2, 16, 5)  # img/16 = 4 x 4 tokens
    assert net.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    with pytest.raises(VoloError, match="mixtoken=false"):
        net.train()(torch.randn(2, 3, 64, 64), mix_box=torch.tensor([0, 0, 2, 2]))
    with pytest.raises(VoloError, match="timm cannot build"):
        TimmTeacherNet("timm:no_such_net", 64, 5)


def test_quality_flags_a_uniform_non_localising_teacher():
    q = TeacherQuality(num_classes=10)
    values = torch.zeros(4, 5, 3, 3)  # every class the same logit: uniform targets, no cell differs
    ids = torch.arange(5).reshape(1, 5, 1, 1).expand(4, 5, 3, 3)
    q.update(values, ids, torch.tensor([1, 2, 3, 4]))  # argmax of equal logits is class 0: never right
    warnings = " ".join(q.warnings())
    assert "near uniform" in warnings and "does not localise" in warnings and "chance" in warnings
    s = q.summary()
    assert s["mean_target_entropy"] == pytest.approx(1.0) and s["varying_maps_pct"] == 0.0
    assert s["mass_outside_topk_pct"] == pytest.approx(50.0)  # 5 of 10 equal logits kept
