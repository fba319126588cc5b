"""A rank SIGKILLed mid-epoch under `torchrun --max-restarts 1`: the job restarts, resumes from the newest valid
checkpoint, finishes, and in deterministic mode ends with exactly the weights of an uninterrupted run.

Both jobs are real two-process gloo jobs of the tiny debug run (2 epochs x 4 steps, global batch 8, a checkpoint
every step); every training sample either job loads is recorded (tests/faults/record_worker.py).
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from faults import PYTHON, latest_step, make_data, run, start, torchrun_cmd, train_args, wait_for, worker_pids
from safetensors.torch import load_file

DET = ["train.deterministic=true", "checkpoint.every_steps=1", "checkpoint.keep_last=2"]
IMAGES, EPOCHS = 32, 2


def _records(folder: Path, restart: int | None = None) -> Counter:
    files = sorted(folder.glob("rank*.txt" if restart is None else f"rank*.restart{restart}.*.txt"))
    return Counter(line for f in files for line in f.read_text().split())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("kill_data"))


def test_sigkill_rank_restarts_resumes_and_matches_uninterrupted(data: Path, tmp_path: Path):
    out = tmp_path / "runs"
    (tmp_path / "rec_base").mkdir()
    (tmp_path / "rec_kill").mkdir()

    base = run(
        torchrun_cmd(2, train_args(data, out, "base", 4, DET), record=True),
        timeout=200,
        VOLO_RECORD_DIR=str(tmp_path / "rec_base"),
    )
    assert base.returncode == 0, base.output[-3000:]

    log = tmp_path / "kill.log"
    job = start(
        torchrun_cmd(2, train_args(data, out, "kill", 4, DET), max_restarts=1, record=True),
        log,
        VOLO_RECORD_DIR=str(tmp_path / "rec_kill"),
    )
    try:
        ckpts = out / "kill" / "checkpoints"
        killed_after = wait_for(
            lambda: latest_step(ckpts) if latest_step(ckpts) >= 2 else 0, 150, "the second checkpoint", job
        )
        os.kill(worker_pids(job.pid)[1], signal.SIGKILL)
        job.wait(timeout=200)
    finally:
        if job.poll() is None:
            job.kill()
    text = log.read_text()
    assert job.returncode == 0, text[-3000:]
    assert "resumed from" in text and "checkpoints/step" in text, text[-3000:]

    result = json.loads((out / "kill" / "result.json").read_text())
    assert result["metrics"]["steps"] == 8 and result["metrics"]["epochs"] == EPOCHS

    a = load_file(str(out / "base" / "weights" / "final.safetensors"))
    b = load_file(str(out / "kill" / "weights" / "final.safetensors"))
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff == 0.0, f"weights differ by {diff} after the restart"

    # Samples: the uninterrupted job loads every image once per epoch; the killed job loads every image at
    # least that often (nothing skipped) and repeats only the steps after its last checkpoint.
    base_count, kill_count = _records(tmp_path / "rec_base"), _records(tmp_path / "rec_kill")
    assert len(base_count) == IMAGES and set(base_count.values()) == {EPOCHS}
    assert set(kill_count) == set(base_count) and min(kill_count.values()) >= EPOCHS
    redone = sum(kill_count.values()) - IMAGES * EPOCHS
    resumed_at = int(text.split("resumed from")[1].split("at step")[1].split(",")[0])
    assert resumed_at >= killed_after
    after_restart = _records(tmp_path / "rec_kill", restart=1)
    assert sum(after_restart.values()) == IMAGES * EPOCHS - resumed_at * 8
    print(
        f"\nRELIABILITY kill: checkpoint step {killed_after}, resumed at step {resumed_at}, samples re-read "
        f"{redone}, lost 0, weight diff {diff}, base {base.seconds:.1f}s"
    )


def test_restarted_ranks_do_not_read_the_previous_attempts_addresses():
    """torchrun keeps one store across restarts; `init_distributed` prefixes it per attempt (see process_group.py)."""
    probe = Path(__file__).parent / "faults" / "restart_probe.py"
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--max-restarts=1",
        "--monitor-interval=0.2",
        str(probe),
    ]
    done = run(cmd, timeout=120)
    assert done.returncode == 0, done.output[-3000:]
    assert "attempt 1 rank 0 sum 4" in done.output and "attempt 1 rank 1 sum 4" in done.output
