"""Training as a user meets it: TensorBoard event files and the W&B hook, step lines without a progress bar, one
epoch numbering, and the setups that used to go wrong silently (no train/val split, one class, bf16 on a CPU,
an init checkpoint loaded without a word, a plain-label fine-tune at a new size)."""

from __future__ import annotations

import json
import re
import sys
import types
import warnings

import pytest

from volo.errors import VoloError
from volo.training.config import load_config
from volo.training.metrics import read_jsonl
from volo.training.trainer import train


def test_tensorboard_events_step_lines_and_one_epoch_numbering(tiny_run, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_run("tb", "schedule.epochs=2", "schedule.warmup_epochs=0", "train.tensorboard=true",
                   "train.log_every=2", "train.amp=bf16")  # fmt: skip
    with pytest.warns(UserWarning, match="train.amp=bf16 has no effect on cpu"):
        result = train(cfg)
    out = capsys.readouterr().out
    steps = read_jsonl(result.run_dir / "metrics" / "steps.jsonl")
    epochs = read_jsonl(result.run_dir / "metrics" / "epochs.jsonl")
    # progress=false: a printed line per logged row, at log_every
    lines = [line for line in out.splitlines() if re.match(r"volo train: epoch \d+ step \d+/\d+ loss ", line)]
    assert len(lines) == len(steps) and lines[0].startswith("volo train: epoch 1 step 2/8 loss ")
    # epochs count from 1 in both files: the step rows of the first epoch say epoch 1, as its epoch row does
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {r["epoch"] for r in steps if r["step"] <= epochs[0]["step"]} == {1}
    assert {r["epoch"] for r in steps if r["step"] > epochs[0]["step"]} == {2}
    # the resolved config records what ran: float32 on the CPU
    assert "amp: none" in (result.run_dir / "config.yaml").read_text()
    # the standard SummaryWriter layout, readable by TensorBoard itself
    events = list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(result.run_dir / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in steps]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert [e.value for e in acc.Scalars("epoch/top1")] == pytest.approx([r["top1"] for r in epochs], rel=1e-6)
    assert "epoch/val_loss" in acc.Tags()["scalars"]


def test_wandb_hook_logs_rows_and_is_a_no_op_without_wandb(tiny_run, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, scalars, step):
            calls.append(("log", step, dict(scalars)))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw["project"], kw["name"])) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    result = train(tiny_run("wb", "schedule.epochs=1", "schedule.warmup_epochs=0", "train.wandb_project=volo-test"))
    assert calls[0] == ("init", "volo-test", "wb") and calls[-1] == ("finish",)
    logged = [c for c in calls if c[0] == "log"]
    steps = read_jsonl(result.run_dir / "metrics" / "steps.jsonl")
    assert [c[2]["train/loss"] for c in logged if "train/loss" in c[2]] == pytest.approx([r["loss"] for r in steps])
    assert any("epoch/top1" in c[2] for c in logged)

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if it were not installed
    with pytest.warns(UserWarning, match="wandb package is not installed: no W&B logging"):
        again = train(tiny_run("wb2", "schedule.epochs=1", "schedule.warmup_epochs=0", "train.wandb_project=x"))
    assert read_jsonl(again.run_dir / "metrics" / "epochs.jsonl")  # the run itself is unaffected


def test_a_folder_without_splits_or_with_one_class_is_reported(tiny_run, tmp_path):
    from volo.data.synthetic import make_synthetic_dataset

    flat = tmp_path / "flat"
    make_synthetic_dataset(flat, classes=4, per_class=2, size=40, seed=0)
    cfg = tiny_run("flat", f"data.path={flat}", "train.max_steps=1")
    with pytest.warns(UserWarning, match=r"has no train/ folder: training on .* with no validation; make .*/train"):
        train(cfg)
    one = tmp_path / "one"
    make_synthetic_dataset(one / "train", classes=1, per_class=2, size=40, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no val/ folder: warned, not what this checks
        with pytest.raises(VoloError, match="has 1 class .*needs at least 2 class folders"):
            train(tiny_run("one", f"data.path={one}", "model.num_classes=1"))


def test_init_checkpoint_is_announced_and_a_plain_label_fine_tune_derives_the_grid(tiny_run, capsys):
    first = train(tiny_run("pre", "train.max_steps=1"))
    capsys.readouterr()
    cfg = tiny_run("ft", "train.max_steps=1", f"model.init_checkpoint={first.final_weights}", img_size=48)
    train(cfg)
    out = capsys.readouterr().out
    assert f"model.init_checkpoint {first.final_weights} loaded: pos_embed resized 2x2 -> 3x3 (bicubic)" in out
    # a recipe's token-label grid follows a new model.img_size (it failed the range check before)
    assert load_config("d1_224", ["model.img_size=384"]).token_labels.size == 24
    with pytest.raises(VoloError, match="token_labels.size=14 is out of range"):
        load_config("d1_224", ["model.img_size=384", "token_labels.size=14"])  # an explicit wrong value still fails


def test_plots_put_validation_loss_beside_training_loss(tmp_path):
    from volo.training.metrics import MetricsLog
    from volo.training.plots import plot_run

    (tmp_path / "metrics").mkdir()
    steps, epochs = MetricsLog(tmp_path / "metrics", "steps"), MetricsLog(tmp_path / "metrics", "epochs")
    for s in range(1, 7):
        steps.write({"step": s, "epoch": 1 + (s > 3), "loss": 2.0 / s, "lr": 1e-3})
    for e in (1, 2):
        epochs.write(
            {"epoch": e, "step": 3 * e, "train_loss": 1.0 / e, "top1": 50.0 * e, "top5": 90.0, "val_loss": 1.5}
        )
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png", "accuracy.png"]
    assert json.loads(json.dumps([str(p) for p in paths]))  # plain paths
