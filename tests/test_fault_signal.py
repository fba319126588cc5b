"""SIGUSR2 / SIGTERM / SIGINT (Slurm's early warning, time limit, scancel or preemption; Ctrl-C): every rank stops at
the same step boundary within one step of the signal, one checkpoint is written, the processes exit with the stop
code (3; 0 under torchrun) and no traceback, no "final" weights are written, and the next launch resumes, here with
a different number of processes, continuing the data order without repeating or skipping a sample."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from faults import kill_group, make_data, run, start, torchrun_cmd, train_args, volo_cmd, wait_for, worker_pids

from volo.data.dataset import Sample
from volo.data.loader import LoaderConfig, build_loader
from volo.training.signals import stop_signals_blocked

IMAGES, EPOCHS, GLOBAL_BATCH = 32, 2, 8


def _steps_logged(run_dir: Path) -> int:
    path = run_dir / "metrics" / "steps.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _last_step(run_dir: Path) -> int:
    return json.loads((run_dir / "metrics" / "steps.jsonl").read_text().splitlines()[-1])["step"]


def _stop(job, send) -> float:
    """Send the signal, wait for the whole job to exit; seconds it took."""
    send()
    t0 = time.monotonic()
    job.wait(timeout=60)
    return time.monotonic() - t0


def _records(folder: Path) -> Counter:
    return Counter(line for f in sorted(folder.glob("rank*.txt")) for line in f.read_text().split())


def test_sigusr2_to_one_rank_stops_all_then_resume_on_one_process(tmp_path: Path):
    data = make_data(tmp_path / "data")
    out, rec = tmp_path / "runs", tmp_path / "rec"
    rec.mkdir()
    run_dir, log = out / "pre", tmp_path / "pre.log"
    # Each training image takes 0.1 s to load, so the first step lasts >= 0.4 s: the signal, sent right after setup,
    # lands inside it, whatever the machine's speed.
    cmd = torchrun_cmd(2, train_args(data, out, "pre", 4), record=True)
    job = start(cmd, log, VOLO_RECORD_DIR=str(rec), VOLO_RECORD_DELAY_S="0.1")
    try:
        # Signal right after setup (the header follows a barrier, so both handlers are installed): the first
        # step boundary, step 1 of 4, is where both ranks must stop, mid-epoch.
        wait_for(lambda: "global batch 8 (2 x 4 x 1)" in log.read_text(), 150, "the run header", job)
        # only rank 1 is told: rank 0 must agree anyway
        stop_s = _stop(job, lambda: os.kill(worker_pids(job.pid)[1], signal.SIGUSR2))
    finally:
        kill_group(job)
    text = log.read_text()
    assert job.returncode == 0, text[-3000:]
    assert "stopped by a signal after saving a checkpoint" in text
    stopped_at = _last_step(run_dir)
    assert stopped_at == 1, f"stopped at step {stopped_at}, not at the first step boundary"
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest.endswith(f"step{stopped_at:09d}.pt")
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt") if p.name != "best.pt")
    assert saved[-1] == latest  # the stop checkpoint is the newest; it was written once, by both ranks together
    before = sum(_records(rec).values())
    assert before == stopped_at * GLOBAL_BATCH, f"{before} samples loaded for {stopped_at} steps"

    # The next launch: one process with the same global batch (8 x 1 instead of 4 x 2).
    resumed = run(volo_cmd(train_args(data, out, "pre", 8), record=True), timeout=200, VOLO_RECORD_DIR=str(rec))
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "written by 2 process(es), this run has 1" in resumed.output
    assert f"resumed from {run_dir / 'checkpoints' / latest} at step {stopped_at}" in resumed.output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"]["steps"] == 8 and result["metrics"]["epochs"] == EPOCHS

    counts = _records(rec)
    assert len(counts) == IMAGES and set(counts.values()) == {EPOCHS}, "a sample was repeated or skipped"
    print(
        f"\nRELIABILITY usr2: stopped at step {stopped_at}, all ranks exited 0 {stop_s:.1f} s after the signal; "
        f"resumed on 1 process, {sum(counts.values())} samples for {EPOCHS} epochs of {IMAGES}: 0 repeated/lost"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_to_the_process_group_with_loader_workers(tmp_path: Path, sig: signal.Signals):
    """What Slurm does to a step (and a terminal's Ctrl-C to its foreground job): the signal reaches the trainer
    AND its two DataLoader workers. Steps are logged only every 100 steps, so only a check at every step boundary
    stops within one step; the workers must survive the signal."""
    data = make_data(tmp_path / "data")
    out, log, rec = tmp_path / "runs", tmp_path / "group.log", tmp_path / "rec"
    rec.mkdir()
    name = sig.name.lower()
    run_dir = out / name
    # 32 images, batch 4: 8 steps per epoch, 3 epochs; every image load sleeps 0.05 s in a worker.
    extra = ["data.workers=2", "train.log_every=100", "schedule.epochs=3"]
    job = start(volo_cmd(train_args(data, out, name, 4, extra), record=True), log, VOLO_RECORD_DIR=str(rec),
                VOLO_RECORD_DELAY_S="0.05")  # fmt: skip
    try:
        wait_for(lambda: "epoch 1 step 8" in log.read_text(), 150, "the end of epoch 1", job)
        stop_s = _stop(job, lambda: os.killpg(job.pid, sig))
    finally:
        kill_group(job)
    text = log.read_text()
    assert job.returncode == 3, text[-3000:]
    assert "Traceback" not in text and "killed by signal" not in text, text[-3000:]
    signalled = int(re.search(rf"got {sig.name} after step (\d+)", text).group(1))
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().strip().split("step")[-1].split(".")[0])
    assert 8 <= signalled <= stopped_at <= signalled + 1 < 24, f"signal after step {signalled}, stop at {stopped_at}"
    assert "stopped by a signal after saving a checkpoint" in text
    assert not (run_dir / "weights" / "final.safetensors").exists(), "an interrupted run wrote final weights"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["interrupted"] is True and result["final_weights"] is None

    resumed = run(volo_cmd(train_args(data, out, name, 4, extra)), timeout=200)
    assert resumed.returncode == 0 and f"at step {stopped_at}" in resumed.output, resumed.output[-3000:]
    assert json.loads((run_dir / "result.json").read_text())["metrics"]["steps"] == 24
    assert (run_dir / "weights" / "final.safetensors").is_file()
    print(
        f"\nRELIABILITY {name} to the process group (2 loader workers): signal after step {signalled}, checkpoint "
        f"at step {stopped_at}, exit 3 after {stop_s:.1f} s, no final weights; resumed to step 24"
    )


class _WorkerSignalState(torch.utils.data.Dataset):
    """Each item: (SIGTERM ignored?, SIGTERM blocked?) as the worker process sees it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Sample:
        ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        image = torch.tensor([float(ignored), float(blocked)])
        return Sample(image=image, label=index, label_transform=torch.zeros(2, 3), index=index)


def test_loader_workers_start_with_stop_signals_blocked_then_ignore_them():
    """Workers are forked with SIGTERM blocked (torch's worker start would die of it before worker_init_fn), then
    ignore it unblocked; the trainer's own mask is left as it was."""
    loader = build_loader(_WorkerSignalState(), LoaderConfig(batch_size=2, num_workers=2, drop_last=False))
    states = torch.cat([batch.images for batch in loader])
    assert states.tolist() == [[1.0, 0.0]] * 4  # every worker: SIGTERM ignored, not blocked
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with stop_signals_blocked():
        assert signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
