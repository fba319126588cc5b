"""Evaluation: exact top-1/top-5 counting, folder-to-model class mapping, released-style checkpoints."""

import pytest
import torch
from torch import nn

from volo.data.batch import Batch, identity_transforms
from volo.distributed.process_group import init_distributed
from volo.errors import VoloError
from volo.models import create_model
from volo.training.evaluate import evaluate
from volo.training.inference import LoadedModel, evaluate_checkpoint, label_map, load_model


class FixedLogits(nn.Module):
    """Returns the logits row stored for each image (the image's first pixel is its row index)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_top1_top5_exact():
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5, 0], [0, 9, 8, 7, 6, 5, 4], [1, 2, 3, 4, 5, 6, 7]])
    labels = torch.tensor([0, 6, 2])  # top-1 hit; rank 7 miss; rank 5 hit in top-5
    images = torch.arange(3.0)[:, None, None, None].expand(3, 3, 16, 16)
    batches = [
        Batch(images[:2], labels[:2], identity_transforms(2)),
        Batch(images[2:], labels[2:], identity_transforms(1)),
    ]
    res = evaluate(FixedLogits(logits), batches, torch.device("cpu"))
    assert res.images == 3
    assert res.top1 == pytest.approx(100 / 3)
    assert res.top5 == pytest.approx(200 / 3)
    assert res.loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_label_map_by_name_and_errors():
    model = nn.Identity()
    loaded = LoadedModel(model, None, ["a", "b", "c", "d"], ["n0", "n1", "n2", "n3"])
    assert label_map(["n1", "n3"], loaded).tolist() == [1, 3]  # e.g. Imagenette wnids into ImageNet indices
    assert label_map(["x", "y", "z", "w"], loaded).tolist() == [0, 1, 2, 3]
    with pytest.raises(VoloError, match="do not match the model's 4 classes"):
        label_map(["x", "y"], loaded)


def test_released_style_checkpoint_evaluates(tmp_path):
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "val", classes=3, per_class=3, size=40, seed=2)
    model = create_model("volo_tiny", img_size=32, num_classes=3)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "released.pth.tar")
    loaded = load_model(tmp_path / "released.pth.tar", torch.device("cpu"))
    assert loaded.model.arch.img_size == 32 and loaded.eval_cfg.crop_pct == 0.96
    assert loaded.class_names == ["0", "1", "2"]
    res = evaluate_checkpoint(tmp_path / "released.pth.tar", tmp_path, init_distributed(), batch_size=4, workers=0)
    assert res.images == 9 and 0 <= res.top1 <= 100 and res.top5 == 100.0  # 3 classes: top-5 always hits
    # at another resolution (pos_embed resized) it still runs
    assert (
        evaluate_checkpoint(tmp_path / "released.pth.tar", tmp_path, init_distributed(), 4, 0, img_size=48).images == 9
    )


def test_compile_flag_evaluates_the_same(tmp_path, monkeypatch, capsys):
    import json

    from volo.cli.main import main
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "val", classes=3, per_class=3, size=40, seed=2)
    torch.manual_seed(0)
    model = create_model("volo_tiny", img_size=32, num_classes=3)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    args = ["eval", str(tmp_path / "w.pth"), "--data", str(tmp_path), "--workers", "0", "--batch-size", "4", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    real_compile, calls = torch.compile, []

    def recording_compile(m, **kw):  # dynamo for real, without a C++ toolchain
        calls.append(kw)
        return real_compile(m, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", recording_compile)
    assert main([*args, "--compile"]) == 0
    compiled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calls == [{}]
    assert compiled["top1"] == plain["top1"] and compiled["loss"] == pytest.approx(plain["loss"], rel=1e-5)
