"""Two trainers on one run folder, and a rerun of an existing run name.

A real `volo train` process holds the folder; a second real process (`--resume auto` on the same name) is refused
with one line naming the holder's pid and host; after the holder is SIGKILLed the kernel has dropped its lock and
the folder can be taken at once. A rerun without --resume refuses an existing run; --overwrite starts it afresh.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from faults import kill_group, make_data, run, start, tiny_config, train_args, volo_cmd, wait_for

from volo.errors import VoloError
from volo.training.run_folder import RunFolderLock
from volo.training.trainer import train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("runfolder_data"))


def test_second_trainer_is_refused_and_sigkill_frees_the_folder(data: Path, tmp_path: Path):
    out, name = tmp_path / "runs", "shared"
    long_run = ["schedule.epochs=200", "checkpoint.every_steps=1"]
    holder = start(volo_cmd(train_args(data, out, name, 8, long_run)), tmp_path / "holder.log")
    try:
        lock = out / name / ".lock"
        wait_for(
            lambda: (out / name / "checkpoints" / "latest").is_file(), 150, "the holder's first checkpoint", holder
        )
        second = run(volo_cmd(train_args(data, out, name, 8, long_run)), timeout=150)
        lines = [ln for ln in second.output.splitlines() if ln.strip()]
        assert second.returncode == 1, second.output[-2000:]  # the run could not start: exit 1, one line
        assert lines[-1] == (
            f"volo train: error: Run folder {out / name} is in use by another trainer (pid {holder.pid} on host "
            f"{socket.gethostname()}); wait for it to finish or stop it, or give this run another --name."
        ), second.output[-2000:]
        assert "Traceback" not in second.output
        assert holder.poll() is None  # the holder was not disturbed
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
        taken = RunFolderLock(out / name).acquire()  # no stale lock: the kernel dropped it with the process
        assert lock.read_text().strip() == f"pid {os.getpid()} on host {socket.gethostname()}"
        taken.release()
    finally:
        if holder.poll() is None:
            kill_group(holder)
    print(f"\nRELIABILITY two-trainers: {lines[-1][:120]}...")


def test_rerun_without_resume_refuses_and_overwrite_starts_afresh(data: Path, tmp_path: Path):
    cfg = tiny_config(data, tmp_path / "runs", "again", "schedule.epochs=1", "schedule.warmup_epochs=0")
    train(cfg)
    run_dir = tmp_path / "runs" / "again"
    epochs = run_dir / "metrics" / "epochs.jsonl"
    before = epochs.read_text()
    with pytest.raises(VoloError) as info:
        train(cfg)
    assert str(info.value) == (
        f"Run folder {run_dir} already holds a run; continue it with --resume auto, start it again from scratch "
        "with --overwrite (deletes its checkpoints, metrics and weights), or pick another --name."
    )
    assert epochs.read_text() == before  # nothing appended, nothing deleted
    train(cfg, overwrite=True)
    rows = [json.loads(line) for line in epochs.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]  # one "epoch 1" row, not two
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
