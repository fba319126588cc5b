"""A rank that stops answering (SIGSTOP): the collective timeout fires and the job exits with a message naming
that rank, instead of hanging forever. The process-group timeout is 6 s (VOLO_DIST_TIMEOUT_S)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from faults import kill_group, latest_step, make_data, start, torchrun_cmd, train_args, wait_for, worker_pids

TIMEOUT_S = 6


def test_stopped_rank_is_named_and_job_exits(tmp_path: Path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "runs"
    log = tmp_path / "hang.log"
    args = train_args(data, out, "hang", 4, ["schedule.epochs=50", "checkpoint.every_steps=1"])
    job = start(torchrun_cmd(2, args), log, VOLO_DIST_TIMEOUT_S=str(TIMEOUT_S))
    try:
        wait_for(lambda: latest_step(out / "hang" / "checkpoints") >= 1, 150, "the first checkpoint", job)
        os.kill(worker_pids(job.pid)[1], signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: "stopped answering" in log.read_text(), TIMEOUT_S + 40, "the error naming the rank", job)
        named_after = time.monotonic() - t0
        job.wait(timeout=90)  # torchrun then SIGKILLs the stopped worker after its 30 s shutdown wait
        seconds = time.monotonic() - t0
    finally:
        kill_group(job)
    text = log.read_text()
    assert job.returncode != 0, text[-3000:]
    lines = [line for line in text.splitlines() if "stopped answering" in line]
    assert lines, text[-4000:]
    assert lines[0].startswith("volo train: error: Rank 1 of 2 stopped answering"), lines[0]
    assert "Traceback" not in text.split("stopped answering")[0][-2000:]
    assert named_after < TIMEOUT_S + 30, f"the rank was named {named_after:.1f} s after the hang"
    print(
        f"\nRELIABILITY hang: named after {named_after:.1f} s, job exited {seconds:.1f} s after SIGSTOP "
        f"(pg timeout {TIMEOUT_S} s): {lines[0][:100]}"
    )
