"""A training image replaced by a FIFO mid-run: `open()` on it blocks forever (no writer ever comes). The loader's
timeout must end the run with one line naming the file (workers=0: the open in the training process itself) or the
stuck loader (workers=1), instead of hanging; the checkpoints written before stay valid.

Real processes, a real `os.mkfifo`; VOLO_LOAD_TIMEOUT_S=5 (the default is 600 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faults import kill_group, make_data, start, train_args, volo_cmd, wait_for

from volo.training.checkpoint import load_checkpoint


@pytest.mark.parametrize("workers", [0, 1])
def test_fifo_in_place_of_an_image_ends_the_run_with_one_line(tmp_path: Path, workers: int):
    data = make_data(tmp_path / "data")
    out, name = tmp_path / "runs", "fifo"
    extra = ["schedule.epochs=200", "checkpoint.every_steps=1", f"data.workers={workers}"]
    log = tmp_path / "train.log"
    job = start(volo_cmd(train_args(data, out, name, 8, extra)), log, VOLO_LOAD_TIMEOUT_S="5")
    try:
        ckpts = out / name / "checkpoints"
        wait_for((ckpts / "latest").is_file, 150, "the first checkpoint", job)
        victim = sorted((data / "train").rglob("*.jpg"))[5]
        victim.unlink()
        os.mkfifo(victim)  # the next epoch opens it and, without a timeout, waits for a writer forever
        code = job.wait(timeout=180)
    finally:
        if job.poll() is None:
            kill_group(job)
    output = log.read_text()
    lines = [ln for ln in output.splitlines() if ln.startswith("volo train: error:")]
    assert code == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith("volo train: error: The training loader produced no batch for 5 s"), lines[0]
    if workers == 0:
        assert f"(it was opening {victim})" in lines[0], lines[0]
    newest = (ckpts / "latest").read_text().strip()
    assert load_checkpoint(ckpts / newest).progress.step >= 1
    print(f"\nRELIABILITY fifo (workers={workers}): {lines[0][:150]}")
