"""Non-finite weights are never written, and the settings that made them are refused up front.

The run-time fault is injected for real: after the real optimiser step 3 one element of a real parameter becomes
inf (as a flipped exponent bit in device memory, or an overflowing update, leaves it). The gradient-norm guard does
not see it at that step; the checkpoint writer must, and nothing after step 2 may reach the disk.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from faults import make_data, tiny_config

from volo.cli.main import main
from volo.errors import VoloError
from volo.training import trainer as trainer_mod
from volo.training.checkpoint import load_checkpoint
from volo.training.checkpoint_integrity import nonfinite
from volo.training.trainer import train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("nonfinite_data"), per_class=4)


def test_weights_turned_inf_are_never_written(data: Path, tmp_path: Path, monkeypatch):
    real_step, calls = trainer_mod.train_step, {"n": 0}

    def step_then_blow_up(ctx, micro):
        stats = real_step(ctx, micro)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                next(p for p in ctx.params if p.dim() > 1).view(-1)[0] = float("inf")
        return stats

    monkeypatch.setattr(trainer_mod, "train_step", step_then_blow_up)
    cfg = tiny_config(data, tmp_path / "runs", "inf", "schedule.epochs=2", "train.batch_size=4", "train.ema=true")
    with pytest.raises(VoloError) as info:
        train(cfg)
    ckpts = tmp_path / "runs" / "inf" / "checkpoints"
    msg = str(info.value)
    assert msg.startswith("The weights became non-finite by step 3 (2 tensors hold NaN or inf, e.g. "), msg
    assert f"nothing was written and the newest checkpoint {ckpts / 'step000000002.pt'} holds finite weights" in msg
    assert (ckpts / "latest").read_text().strip() == "step000000002.pt"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["step000000001.pt", "step000000002.pt"]
    saved = load_checkpoint(ckpts / "step000000002.pt")
    assert nonfinite(saved.model) == [] and nonfinite(saved.ema) == []
    assert not (tmp_path / "runs" / "inf" / "weights" / "final.safetensors").exists()
    print(f"\nRELIABILITY non-finite weights: {msg[:120]}...")


REFUSED = {
    "schedule.warmup_lr=.inf": "schedule.warmup_lr=inf",
    "optim.lr_base=1e300": "optim.lr_base=1e+300",
    "schedule.min_lr=nan": "schedule.min_lr=nan",
    "optim.eps=0": "optim.eps=0",
    "data.eval_crop_pct=1e-9": "data.eval_crop_pct=1e-09",
    "data.workers=1000000": "data.workers=1000000",
    "model.img_size=65536": "model.img_size=65536",
    "checkpoint.run_name=../../..": "checkpoint.run_name='../../..'",
}


@pytest.mark.parametrize("setting", list(REFUSED))
def test_cli_refuses_settings_that_break_weights_or_escape_the_folder(capsys, data: Path, tmp_path: Path, setting):
    out = tmp_path / "a" / "b" / "c"
    argv = ["train", "debug", "--data", str(data), "--out", str(out), "--set", "token_labels.size=null"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([*argv, "--set", setting])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"volo train: error: Config value {REFUSED[setting]}"), lines[0]
    assert not (tmp_path / "a").exists()  # refused before anything was created
