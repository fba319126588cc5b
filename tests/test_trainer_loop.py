"""The training loop wires its parts as the formulas say: after N steps every param group's lr is the schedule's,
the groups carry [weight_decay, 0.0], and the EMA columns are the EMA model's evaluation (not the live model's).
One short debug run at 64 px (a 4x4 token grid, so MixToken boxes are real), 2 epochs of 4 steps."""

from __future__ import annotations

import json

import pytest
import torch

import volo.training.trainer as trainer_module
from volo.models.weights import read_state_dict
from volo.training.checkpoint import load_checkpoint
from volo.training.ema import ModelEma
from volo.training.optim import BatchGeometry, scaled_lr
from volo.training.schedule import build_schedule
from volo.training.trainer import train


class CountingEma(ModelEma):
    """The trainer's EMA, counting its updates and keeping the decay it was given."""

    instances: list[CountingEma] = []

    def __init__(self, model, decay):
        super().__init__(model, decay)
        self.given_decay, self.updates = decay, 0
        CountingEma.instances.append(self)

    def update(self, model):
        self.updates += 1
        super().update(model)


@pytest.fixture
def recorded_run(tiny_run, monkeypatch):
    """A finished run plus what each `evaluate` call saw: the module's weights and the result."""
    calls = []
    real = trainer_module.evaluate

    def recording(module, *args, **kwargs):
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        result = real(module, *args, **kwargs)
        calls.append((weights, result))
        return result

    monkeypatch.setattr(trainer_module, "evaluate", recording)
    monkeypatch.setattr(trainer_module, "ModelEma", CountingEma)
    CountingEma.instances.clear()
    cfg = tiny_run(
        "loop",
        "schedule.epochs=2",
        "schedule.warmup_epochs=1",
        "train.ema=true",
        "train.ema_decay=0.7",
        "optim.weight_decay=0.05",
        img_size=64,
    )
    return cfg, train(cfg), calls


@pytest.mark.timeout(240)
def test_lr_groups_and_ema_evaluation(recorded_run):
    cfg, result, calls = recorded_run
    assert result.metrics["steps"] == 8
    schedule = build_schedule(cfg.schedule, scaled_lr(cfg.optim.lr_base, BatchGeometry(1, 4, 1)), steps_per_epoch=4)
    # every logged step ran at the schedule's lr for its (0-based) position
    rows = [json.loads(r) for r in (result.run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["lr"] for r in rows] == pytest.approx([schedule(s - 1) for s in range(1, 9)], rel=1e-12)
    # and the optimiser really had it: the checkpoint after step N holds schedule(N - 1) in every group
    for name, step in [("epoch0001_step000000004.pt", 4), ("epoch0002_step000000008.pt", 8)]:
        groups = load_checkpoint(result.run_dir / "checkpoints" / name).optimizer["param_groups"]
        assert [g["lr"] for g in groups] == pytest.approx([schedule(step - 1)] * 2, rel=1e-12)
        assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert schedule(3) != schedule(7) != schedule.peak_lr  # the values above are not a constant lr
    # two evaluations per epoch: the live model, then the EMA model; the EMA columns are the second one's
    assert len(calls) == 4
    final = read_state_dict(result.final_weights)
    ema = read_state_dict(result.ema_weights)
    seen_model, res_model = calls[2]
    seen_ema, res_ema = calls[3]
    for k in final:
        torch.testing.assert_close(seen_model[k], final[k], rtol=0, atol=0)
        torch.testing.assert_close(seen_ema[k], ema[k], rtol=0, atol=0)
    assert any(not torch.equal(final[k], ema[k]) for k in final if k.endswith("weight"))
    # one EMA, with the configured decay, updated after every optimiser step
    assert [(e.given_decay, e.updates) for e in CountingEma.instances] == [(0.7, 8)]
    epochs = [json.loads(r) for r in (result.run_dir / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert epochs[-1]["ema_top1"] == res_ema.top1 and epochs[-1]["top1"] == res_model.top1
