"""NaN / inf loss: the step is skipped (weights untouched) and counted; `train.max_bad_steps` consecutive bad steps
stop the run with a checkpoint and a message saying what to try. Real single-process runs; the loss of chosen
steps is multiplied by NaN or inf, so the whole backward pass carries it as a real divergence would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from faults import make_data, tiny_config

from volo.errors import VoloError
from volo.training.checkpoint import load_checkpoint
from volo.training.faults import BadStepGuard
from volo.training.loss import TokenLabelingLoss
from volo.training.trainer import train


def _params(model: dict) -> dict:
    """Trainable tensors only (BatchNorm running statistics are updated by the forward pass of any step)."""
    return {k: v for k, v in model.items() if "running_" not in k and "num_batches_tracked" not in k}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("nan_data"))


def _poison(monkeypatch, bad: dict[int, float]) -> None:
    """Multiply the loss of 1-based step s (one micro-batch per step) by bad[s] (NaN or inf)."""
    original = TokenLabelingLoss.forward
    calls = {"n": 0}

    def forward(self, output, targets):
        calls["n"] += 1
        parts = original(self, output, targets)
        if calls["n"] in bad:
            parts.total = parts.total * bad[calls["n"]]
        return parts

    monkeypatch.setattr(TokenLabelingLoss, "forward", forward)


def _cfg(data: Path, out: Path, name: str, *extra: str):
    return tiny_config(data, out, name, *extra)


def test_nan_and_inf_steps_are_skipped_and_counted(data: Path, tmp_path: Path, monkeypatch):
    _poison(monkeypatch, {3: float("nan"), 6: float("inf")})
    result = train(_cfg(data, tmp_path, "skip"))
    assert not result.interrupted and result.metrics["steps"] == 8
    assert result.metrics["skipped_steps"] == 2
    ck = tmp_path / "skip" / "checkpoints"
    for bad in (3, 6):
        before, after = (load_checkpoint(next(ck.glob(f"*step{s:09d}.pt"))) for s in (bad - 1, bad))
        assert all(torch.equal(v, after.model[k]) for k, v in _params(before.model).items()), f"step {bad} changed"
        assert before.optimizer["state"][0]["step"] == after.optimizer["state"][0]["step"]  # AdamW did not step
    good_before = _params(load_checkpoint(next(ck.glob("*step000000001.pt"))).model)
    good_after = _params(load_checkpoint(next(ck.glob("*step000000002.pt"))).model)
    assert not all(torch.equal(good_before[k], good_after[k]) for k in good_before)
    rows = [json.loads(line) for line in (tmp_path / "skip" / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 2, 2, 2]
    print("\nRELIABILITY nan-skip: 2 bad steps (NaN, inf) skipped and counted, weights unchanged by them, run finished")


def test_consecutive_bad_steps_stop_with_checkpoint_and_advice(data: Path, tmp_path: Path, monkeypatch):
    _poison(monkeypatch, dict.fromkeys(range(3, 100), float("nan")))
    with pytest.raises(VoloError) as info:
        train(_cfg(data, tmp_path, "stop", "train.max_bad_steps=3"))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("3 optimiser steps in a row (up to step 5) had a NaN or infinite loss and were skipped")
    assert "optim.lr_base" in msg and "train.clip_grad" in msg and "--resume auto" in msg
    saved = tmp_path / "stop" / "checkpoints" / "step000000005.pt"
    assert str(saved) in msg
    ckpt = load_checkpoint(saved)
    assert ckpt.progress.step == 5 and ckpt.progress.skipped_steps == 3
    assert all(torch.isfinite(v).all() for v in ckpt.model.values() if v.is_floating_point())
    good = _params(load_checkpoint(next(saved.parent.glob("*step000000002.pt"))).model)
    assert all(torch.equal(good[k], ckpt.model[k]) for k in good)  # the checkpoint holds the last good weights
    print(f"\nRELIABILITY nan-stop: stopped at step 5 after 3 bad steps, checkpoint {saved.name}: {msg[:90]}...")


def test_bad_step_guard_counts_runs_only():
    guard = BadStepGuard(limit=2)
    for skipped, expected in [(1, 1), (0, 0), (1, 1), (1, 2), (1, 3), (0, 0)]:
        guard.update(torch.tensor(float(skipped)))
        assert guard.consecutive() == expected
    with pytest.raises(VoloError, match="must be >= 1"):
        BadStepGuard(limit=0)
