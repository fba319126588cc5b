"""A real two-node Slurm cluster on this machine runs the script `volo slurm` generates, end to end.

2 nodes x 2 gloo ranks (torchrun per node, c10d rendezvous) train the debug recipe on a generated dataset; an
early-warning USR2 to the batch shell makes the ranks checkpoint, the script requeues the job, and the requeued job
resumes (`--resume auto`) and finishes. A rank that dies ends the whole job without a requeue. The cluster comes up
through tests/slurm/cluster.sh and its daemons are stopped by pid file afterwards; every wait is bounded.

Needs root and `apt-get install -y slurmctld slurmd slurm-client munge`; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from volo.cli.main import main as volo_main

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

HERE = Path(__file__).parent
CLUSTER_SH = HERE / "slurm" / "cluster.sh"
FAKE_TRAINER = HERE / "slurm" / "fake_trainer.py"
VENV_BIN = Path(sys.executable).parent


def _missing() -> str | None:
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install -y slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_TEST_PORT_BASE": "17100"}
    started = subprocess.run(
        ["bash", str(CLUSTER_SH), "start", str(folder)], env=env, capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(folder)], timeout=60)
        pytest.fail(f"cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    conf = str(folder / "slurm.conf")
    try:
        yield conf
    finally:
        # SIGKILL, not scancel's TERM: the script would treat TERM as a preemption and requeue the job.
        subprocess.run(
            ["scancel", "--full", "--signal=KILL", "--user=root"], env={**os.environ, "SLURM_CONF": conf}, timeout=30
        )
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(folder)], timeout=120)
        for pidfile in folder.glob("*.pid"):
            pytest.fail(f"{pidfile} left behind: a daemon was not stopped")


def slurm(conf: str, *argv: str) -> str:
    result = subprocess.run(list(argv), env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else "(no log)"
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; log tail:\n{tail}")


def job_state(conf: str, job_id: str) -> str:
    text = slurm(conf, "scontrol", "show", "job", job_id)
    return re.search(r"JobState=(\S+)", text).group(1)


def submit(conf: str, monkeypatch, capsys, out: Path, *argv: str) -> tuple[str, Path]:
    monkeypatch.setenv("SLURM_CONF", conf)
    common = [
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--procs-per-node",
        "2",
        "--out",
        str(out),
        "--time",
        "10",
        "--mem",
        "none",
        "--no-exclusive",
        "--env",
        f"PATH={VENV_BIN}:{os.environ['PATH']}",
        "--submit",
    ]
    assert volo_main(["slurm", *argv, *common]) == 0
    job_id = re.search(r"submitted job (\d+)", capsys.readouterr().out).group(1)
    return job_id, out / f"slurm-{job_id}.out"


def signal_requeue_release(conf: str, job_id: str, log: Path, ready: str) -> None:
    """Wait for `ready` in the log, warn the batch shell with USR2, wait for the requeue and release the job."""
    wait_for(lambda: log.exists() and ready in log.read_text(), 240, f"{ready!r} in the log", log)
    slurm(conf, "scancel", "--signal=USR2", "--batch", job_id)
    wait_for(lambda: "requeueing job" in log.read_text(), 180, "the requeue", log)
    wait_for(lambda: job_state(conf, job_id) in ("PENDING", "RUNNING", "COMPLETED"), 60, "the requeued job", log)
    if job_state(conf, job_id) == "PENDING":  # a requeued job waits ~2 min (BeginTime) unless released
        slurm(conf, "scontrol", "update", f"JobId={job_id}", "StartTime=now")


def test_volo_train_signal_checkpoint_requeue_resume(cluster, tmp_path, monkeypatch, capsys):
    from volo.data.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(data / "train", classes=10, per_class=12, size=72, seed=0)
    make_synthetic_dataset(data / "val", classes=10, per_class=2, size=72, seed=1)
    out = tmp_path / "run"
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "debug", "--data-dir", str(data), "--volo", str(VENV_BIN / "volo"),
        "--rdzv-port", "29531", "--set", "train.batch_size=2", "--set", "schedule.epochs=8",
        "--set", "train.log_every=1", "--set", "train.progress=false",
    )  # fmt: skip
    signal_requeue_release(cluster, job_id, log, "epoch 2 step 30")
    wait_for(lambda: job_state(cluster, job_id) == "COMPLETED", 360, "the resumed run to finish", log)

    text = log.read_text()
    assert "job " + job_id + " start (restart 0)" in text and "job " + job_id + " start (restart 1)" in text
    assert text.count("got SIGUSR2: forwarding to the ranks") == 1
    assert text.count("requeueing job") == 1
    resumed = re.search(r"resumed from \S+ at step (\d+), epoch (\d+)", text)
    assert resumed and 30 <= int(resumed.group(1)) < 120
    assert "epoch 8 step 120" in text
    assert text.rstrip().splitlines()[-1].endswith("srun exited with status 0")
    result = json.loads((out / "debug" / "result.json").read_text())
    assert result["metrics"]["steps"] == 120 and result["metrics"]["epochs"] == 8
    assert (out / "debug" / "weights" / "final.safetensors").is_file()


def test_dead_rank_ends_the_job_without_requeue(cluster, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "debug", "--volo", str(FAKE_TRAINER), "--rdzv-port", "29532",
        "--set", "steps=400", "--set", "step_s=0.2", "--set", "die_rank=3", "--set", "die_step=5",
    )  # fmt: skip
    wait_for(lambda: job_state(cluster, job_id) in ("FAILED", "COMPLETED", "CANCELLED"), 240, "the job to end", log)
    text = log.read_text()
    assert job_state(cluster, job_id) == "FAILED"
    assert "rank 3: dying at step 5" in text
    assert "requeueing" not in text and not (out / "fake_done.json").exists()
    status = int(re.search(r"srun exited with status (\d+)", text).group(1))
    assert status != 0


def test_one_task_per_rank_launcher_requeue(cluster, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "debug", "--launcher", "srun", "--volo", str(FAKE_TRAINER),
        "--rdzv-port", "29533", "--set", "steps=60", "--set", "step_s=0.2",
    )  # fmt: skip
    signal_requeue_release(cluster, job_id, log, "resumes at step 0")
    wait_for(lambda: job_state(cluster, job_id) == "COMPLETED", 240, "the resumed job to complete", log)
    done = json.loads((out / "fake_done.json").read_text())
    assert done["world"] == 4 and len(done["attempts"]) == 2 and sum(done["attempts"]) == 60
    assert done["total"] == 60 * 4  # every step all-reduced over all four ranks, across the requeue
    assert all(f"rank {r}/4" in log.read_text() for r in range(4))
