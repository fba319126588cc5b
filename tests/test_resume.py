"""Exact resume: the resumable sampler, and a run killed (SIGKILL) mid-epoch then resumed repeats the losses exactly.

The run is at 64 px (a 4x4 token grid): MixToken boxes are non-empty, so a MixToken generator that is not restored
changes the resumed losses (at 32 px, a 2x2 grid, every box is empty)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from volo.data.sampler import ResumableDistributedSampler

# -- the sampler ---------------------------------------------------------------------------------------------


def test_sampler_epoch_order_shards_and_resume():
    n, gb = 50, 8
    one = ResumableDistributedSampler(n, 1, 0, gb, seed=3)
    one.set_epoch(2)
    order = list(one)
    assert len(order) == 48 and len(set(order)) == 48  # truncated to whole global batches, no repeats
    two = [ResumableDistributedSampler(n, 2, r, gb, seed=3) for r in range(2)]
    for s in two:
        s.set_epoch(2)
    shards = [list(s) for s in two]
    assert len(shards[0]) == len(shards[1]) == 24
    for k in range(6):  # global step k sees the same 8 images whatever the world size
        assert set(order[8 * k : 8 * k + 8]) == set(shards[0][4 * k : 4 * k + 4] + shards[1][4 * k : 4 * k + 4])
    one.set_epoch(3)
    assert list(one) != order  # reshuffled per epoch


def test_sampler_resume_mid_epoch_and_new_world_size():
    full = ResumableDistributedSampler(64, 1, 0, 8, seed=1)
    full.set_epoch(0)
    order = list(full)
    later = ResumableDistributedSampler(64, 1, 0, 8, seed=1)
    later.set_epoch(0, consumed=24)
    assert list(later) == order[24:]
    # 4 ranks, global batch 16, continuing from sample 24 of the 1-rank run: no repeat, no skip
    ranks = [ResumableDistributedSampler(64, 4, r, 16, seed=1) for r in range(4)]
    with pytest.warns(UserWarning, match="not a multiple of the new global batch"):
        for s in ranks:
            s.set_epoch(0, consumed=24)
    got = sorted(i for s in ranks for i in s)
    assert got == sorted(order[24:56]) and len(ranks[0]) == 8


# -- kill and resume -----------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from volo.training.config import load_config
    from volo.training.metrics import MetricsLog
    from volo.training.trainer import train
    data, out, name = sys.argv[1:4]
    kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if kill_at:  # SIGKILL this process right after step `kill_at` is logged: a real kill at a known point
        write = MetricsLog.write
        def write_then_die(self, row):
            write(self, row)
            if row.get("step") == kill_at and "loss" in row:
                os.kill(os.getpid(), signal.SIGKILL)
        MetricsLog.write = write_then_die
    cfg = load_config("debug", [
        "model.num_classes=3", f"data.path={data}", f"checkpoint.output_dir={out}", f"checkpoint.run_name={name}",
        "train.batch_size=4", "schedule.epochs=2", "schedule.warmup_epochs=1", "train.log_every=1",
        "train.deterministic=true", "train.progress=false", "checkpoint.every_steps=2",
        "data.rand_augment=rand-m9-mstd0.5-inc1",
        "data.reprob=0.25", "model.drop_path_rate=0.1", "model.img_size=64", "token_labels.size=null", "train.ema=true",
    ])
    train(cfg, resume="auto")
    """
)


def _run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], env=env, **kw)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}  # a step logged twice (before the kill and after) keeps the last


@pytest.mark.timeout(900)  # 3 short runs at 64 px; generous for a loaded 2-core CI machine
def test_killed_run_resumes_with_identical_losses(tmp_path):
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data" / "train", classes=3, per_class=6, size=40, seed=0)
    make_synthetic_dataset(tmp_path / "data" / "val", classes=3, per_class=2, size=40, seed=1)
    ref = _run([tmp_path / "data", tmp_path / "runs", "ref"])
    victim = _run([tmp_path / "data", tmp_path / "runs", "victim", 7])  # killed mid-epoch 2 (4 steps an epoch)
    try:
        _kill_and_resume(tmp_path, ref, victim)
    finally:
        for proc in (ref, victim):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _kill_and_resume(tmp_path, ref, victim):
    steps = tmp_path / "runs" / "victim" / "metrics" / "steps.jsonl"
    assert victim.wait(timeout=400) == -signal.SIGKILL
    killed_at = max(json.loads(x)["step"] for x in steps.read_text().splitlines())
    assert killed_at == 7  # after the step-6 checkpoint, before the end of epoch 2
    resumed = _run([tmp_path / "data", tmp_path / "runs", "victim"], stdout=subprocess.PIPE, text=True)
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0
    assert re.search(r"resumed from \S+step0+6\.pt at step 6, epoch 1", out), out  # really loaded, no restart
    logged = [json.loads(x)["step"] for x in steps.read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6, 7, 8]  # the resumed process redid step 7 and ran 8; the old row 7 dropped
    assert ref.wait(timeout=400) == 0
    expected = _losses(tmp_path / "runs" / "ref")
    assert sorted(expected) == list(range(1, 9))
    assert _losses(tmp_path / "runs" / "victim") == expected  # bit-for-bit
    ref_ep = (tmp_path / "runs" / "ref" / "metrics" / "epochs.jsonl").read_text().splitlines()
    vic_ep = (tmp_path / "runs" / "victim" / "metrics" / "epochs.jsonl").read_text().splitlines()
    assert json.loads(ref_ep[-1])["top1"] == json.loads(vic_ep[-1])["top1"]
