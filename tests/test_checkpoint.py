"""Checkpoints: weights_only round trip, atomic writes, keep-last-k + best + milestones, damage fallback."""

import random
import warnings

import numpy as np
import pytest
import torch

from volo.errors import VoloError
from volo.models import create_model
from volo.training.checkpoint import (
    CheckpointManager,
    Progress,
    TrainingCheckpoint,
    atomic_torch_save,
    load_checkpoint,
    resolve_resume,
)
from volo.training.config import OptimConfig, load_config
from volo.training.optim import build_optimizer
from volo.training.rng import capture_rng, restore_rng


def _ckpt(step: int, epoch: int = 0) -> TrainingCheckpoint:
    model = create_model("volo_tiny", img_size=32, num_classes=3)
    opt = build_optimizer(model, OptimConfig(), 1e-3)
    model(torch.randn(2, 3, 32, 32)).cls_logits.sum().backward()
    opt.step()
    rng = capture_rng()
    rng["mixtoken"] = np.random.default_rng(5).bit_generator.state
    return TrainingCheckpoint(
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        progress=Progress(
            epoch=epoch, step=step, epoch_consumed=16, images_seen=step * 8, best_top1=12.5, best_epoch=1
        ),
        config=load_config("debug").to_dict(),
        world_size=2,
        ema=model.state_dict(),
        scaler=None,
        rng=[rng, rng],
        sampler={"epoch": epoch, "consumed": 16},
    )


def test_round_trip_weights_only(tmp_path):
    ck = _ckpt(step=7, epoch=1)
    path = atomic_torch_save(ck.to_dict(), tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    back = load_checkpoint(path)
    assert back.progress == ck.progress and back.world_size == 2 and back.config == ck.config
    assert all(torch.equal(back.model[k], v) for k, v in ck.model.items())
    assert back.optimizer["state"][0]["step"] == ck.optimizer["state"][0]["step"]
    assert raw["format"] == "volo-train-checkpoint"
    assert back.sampler == {"epoch": 1, "consumed": 16}
    assert back.rng[1]["mixtoken"] == ck.rng[1]["mixtoken"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


def test_rng_round_trip(tmp_path):
    state = capture_rng()
    atomic_torch_save({"rng": state}, tmp_path / "r.pt")
    expected = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected


def test_keep_last_best_milestones_and_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2, milestones=[2])
    base = _ckpt(step=0)
    for epoch in range(1, 6):
        base.progress = Progress(epoch=epoch, step=10 * epoch)
        mgr.save(base, epoch_end=True, is_best=epoch == 3)
    base.progress = Progress(epoch=5, step=55, epoch_consumed=8)
    mgr.save(base, epoch_end=False)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == ["best.pt", "epoch0002_step000000020.pt", "epoch0005_step000000050.pt", "step000000055.pt"]
    assert (tmp_path / "latest").read_text().strip() == "step000000055.pt"
    assert load_checkpoint(tmp_path / "best.pt").progress.epoch == 3  # survives pruning of epoch 3


def test_resume_auto_skips_damaged_newest(tmp_path):
    mgr = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    ck = _ckpt(step=0)
    for step in (10, 20):
        ck.progress = Progress(epoch=step // 10, step=step)
        mgr.save(ck, epoch_end=True)
    newest = tmp_path / "checkpoints" / "epoch0002_step000000020.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as a crash during a non-atomic copy would leave it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, found = resolve_resume("auto", tmp_path / "checkpoints")
    assert path.name == "epoch0001_step000000010.pt" and found.progress.step == 10
    assert any("epoch0002_step000000020.pt" in str(w.message) for w in caught)
    assert resolve_resume("auto", tmp_path / "nothing") is None
    with pytest.raises(VoloError, match="does not match its recorded SHA-256.*damaged"):
        load_checkpoint(newest)


def test_foreign_file_is_refused(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "x.pt")
    with pytest.raises(VoloError, match="not a volo training checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(VoloError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
