"""A real two-node Slurm cluster on this machine runs the scripts `volo slurm` generates, end to end.

node1 (127.0.0.1) and node2 (127.0.0.2), one or two gloo ranks each. With the real `volo train` (debug recipe, 32 px):
`scancel` sends SIGTERM to every process of the step, DataLoader workers included: the ranks checkpoint within one
step and exit 3 without a traceback, and the job ends CANCELLED without a restart; the early-warning USR2 checkpoints,
requeues and resumes to the weights of an uninterrupted run (to float32 rounding); a master that is not the first
node's address fails at once. With tests/slurm/fake_trainer.py (a gloo job all-reducing a counter every step): Slurm's
own requeue of a running job (what a preemption does) resumes, here with the torchrun launcher; a dead rank ends the
job without a requeue.

Needs root and `apt-get install -y slurmctld slurmd slurm-client munge`; skipped otherwise. The cluster comes up
through tests/slurm/cluster.sh and its daemons are stopped by pid file afterwards; every wait is bounded.
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
from faults import PYTHON, RECORD_WORKER, TINY, make_data, torchrun_cmd, train_args

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
    env = {**os.environ, "SLURM_TEST_PORT_BASE": os.environ.get("SLURM_TEST_PORT_BASE", "17100")}  # two suites at once
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
        time.sleep(0.2)
    tail = "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else "(no log)"
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; log tail:\n{tail}")


def job_field(conf: str, job_id: str, name: str) -> str:
    return re.search(rf"\b{name}=(\S+)", slurm(conf, "scontrol", "show", "job", job_id)).group(1)


def logged(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text()


def submit(conf: str, monkeypatch, capsys, out: Path, name: str, *argv: str, procs: int = 2) -> tuple[str, Path]:
    monkeypatch.setenv("SLURM_CONF", conf)
    common = ["--nodes", "2", "--gpus-per-node", "0", "--procs-per-node", str(procs), "--out", str(out), "--name", name,
              "--time", "10", "--mem", "none", "--no-exclusive", "--env", f"PATH={VENV_BIN}:{os.environ['PATH']}",
              "--env", "OMP_NUM_THREADS=1", "--exit-wait", "20", "--submit"]  # fmt: skip
    assert volo_main(["slurm", *argv, *common]) == 0
    job_id = re.search(r"submitted job (\d+)", capsys.readouterr().out).group(1)
    return job_id, out / name / f"slurm-{job_id}.out"


def wait_requeued_and_running(conf: str, job_id: str, log: Path) -> None:
    """The requeued job starts again by itself: the test cluster's credentials expire after 10 s (cluster.sh), and a
    requeued job waits that long (BeginTime) so its old instance's revoked credential cannot block it."""
    wait_for(lambda: job_field(conf, job_id, "Restarts") == "1", 90, "Restarts=1", log)
    wait_for(lambda: job_field(conf, job_id, "JobState") in ("RUNNING", "COMPLETED"), 90, "the restart", log)


def slow_volo(tmp_path: Path, delay_s: float) -> Path:
    """A `volo` for the ranks whose every training-image load sleeps `delay_s` (tests/faults/record_worker.py)."""
    (tmp_path / "rec").mkdir()
    wrapper = tmp_path / "slow_volo"
    wrapper.write_text(
        f"#!/bin/bash\nexport VOLO_RECORD_DIR={tmp_path / 'rec'} VOLO_RECORD_DELAY_S={delay_s}\n"
        f'exec {PYTHON} {RECORD_WORKER} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def tiny_sets(*extra: str) -> list[str]:
    """`--set` flags: the tiny debug run at 32 px (4 classes x 8 images), 2 images per rank: 4 steps per epoch."""
    return [arg for item in [*TINY, "train.batch_size=2", *extra] for arg in ("--set", item)]


def test_scancel_checkpoints_within_a_step_and_ends_the_job(cluster, tmp_path, monkeypatch, capsys):
    """Plain `scancel`: SIGTERM to every process of the step, two DataLoader workers per rank included."""
    data = make_data(tmp_path / "data")
    job_id, log = submit(
        cluster, monkeypatch, capsys, tmp_path / "runs", "cancel", "debug", "--data-dir", str(data), "--no-bind",
        "--volo", str(slow_volo(tmp_path, 0.2)),
        *tiny_sets("data.workers=2", "train.log_every=100", "schedule.epochs=12", "train.batch_size=4"), procs=1,
    )  # fmt: skip
    # right after epoch 1's last step: the TERM lands while the evaluation starts its loader workers (before they
    # were started with the signal blocked, one of them died of it 2 times in 4 and took its rank with it)
    wait_for(logged(log, "epoch 1 step 4/"), 240, "epoch 1's last step", log)
    slurm(cluster, "scancel", job_id)
    wait_for(lambda: job_field(cluster, job_id, "JobState") == "CANCELLED", 90, "CANCELLED", log)
    wait_for(logged(log, "srun exited with status"), 30, "the end of the batch script", log)
    time.sleep(3)  # a requeue would show by now
    assert job_field(cluster, job_id, "JobState") == "CANCELLED" and job_field(cluster, job_id, "Restarts") == "0"
    text = log.read_text()
    assert "requeueing" not in text and "Traceback" not in text and "killed by signal" not in text, text[-3000:]
    signalled = [int(n) for n in re.findall(r"got SIGTERM after step (\d+)", text)]
    assert len(signalled) == 2, text[-3000:]  # every rank, each once
    run_dir = tmp_path / "runs" / "cancel"
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().strip().split("step")[-1].split(".")[0])
    assert max(signalled) <= stopped_at <= min(signalled) + 1 < 48, (signalled, stopped_at)
    assert "srun exited with status 3" in text and "stopped by a signal after saving a checkpoint" in text
    assert text.count('"steps":') == 1  # only rank 0 prints the result
    assert not (run_dir / "weights" / "final.safetensors").exists()


def test_early_warning_requeues_and_resumes_to_the_uninterrupted_weights(cluster, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    data = make_data(tmp_path / "data")
    out = tmp_path / "runs"
    # One rank per node, 4 images each; the uninterrupted reference: the same 2 ranks on this machine, meanwhile.
    # No `volo bind`: it would give each rank its node's 2 cores (OMP_NUM_THREADS=2), another summation order.
    extra = ["train.deterministic=true", "schedule.epochs=4", "train.batch_size=4"]
    reference = subprocess.Popen(
        torchrun_cmd(2, [*train_args(data, out, "reference", 4, extra, resume=False)]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "warned", "debug", "--data-dir", str(data), "--no-bind",
        "--volo", str(slow_volo(tmp_path, 0.1)), *tiny_sets(*extra), procs=1,
    )  # fmt: skip
    wait_for(logged(log, "epoch 1 step 4"), 240, "epoch 1", log)
    slurm(cluster, "scancel", "--signal=USR2", "--batch", job_id)
    wait_for(logged(log, "requeueing job"), 120, "the requeue", log)
    wait_requeued_and_running(cluster, job_id, log)
    wait_for(lambda: job_field(cluster, job_id, "JobState") == "COMPLETED", 300, "the resumed run to finish", log)
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out[-3000:]

    text = log.read_text()
    assert f"job {job_id} start (restart 0" in text and f"job {job_id} start (restart 1" in text
    assert text.count("got SIGUSR2: forwarding to the ranks") == 1 and text.count("requeueing job") == 1
    resumed = re.search(r"resumed from \S+ at step (\d+)", text)
    assert resumed and 4 <= int(resumed.group(1)) < 16, text[-3000:]
    assert text.rstrip().splitlines()[-1].endswith("srun exited with status 0")
    # Same data, same random draws, same steps: the losses agree to float32 rounding at every step, and so do the
    # weights. Not bit for bit: DDP rebuilds its gradient buckets after a process's first step, so the first step
    # after the resume runs on another bucket layout and the fused AdamW rounds some elements differently (measured:
    # at most 1.8e-7, one float32 ulp at the weights' scale, after 11 more steps).
    losses = [[json.loads(line)["loss"] for line in (out / name / "metrics" / "steps.jsonl").read_text().splitlines()]
              for name in ("reference", "warned")]  # fmt: skip
    assert len(losses[0]) == len(losses[1]) == 16
    assert all(abs(a - b) <= 1e-6 * abs(a) for a, b in zip(*losses)), losses
    assert losses[0][:6] == losses[1][:6]  # up to and including the first step after the resume: bit for bit
    got = load_file(out / "warned" / "weights" / "final.safetensors")
    want = load_file(out / "reference" / "weights" / "final.safetensors")
    assert got.keys() == want.keys()
    worst = max(float((got[k].double() - want[k].double()).abs().max()) for k in want if want[k].is_floating_point())
    assert worst <= 1e-5, f"weights differ by up to {worst}"


def test_wrong_master_fails_at_once(cluster, tmp_path, monkeypatch, capsys):
    """MASTER_ADDR=node2 (127.0.0.2) while rank 0 runs on node1 (127.0.0.1): a one-line error, not a long hang."""
    data = make_data(tmp_path / "data")
    job_id, log = submit(
        cluster, monkeypatch, capsys, tmp_path / "runs", "wrong", "debug", "--data-dir", str(data), "--no-bind",
        "--env", "MASTER_ADDR=node2", "--env", "VOLO_DIST_TIMEOUT_S=600", *tiny_sets(), procs=1,
    )  # fmt: skip
    wait_for(lambda: job_field(cluster, job_id, "JobState") in ("FAILED", "COMPLETED"), 180, "the job to end", log)
    text = log.read_text()
    assert job_field(cluster, job_id, "JobState") == "FAILED", text[-3000:]
    assert "MASTER_ADDR=node2 (127.0.0.2) is not the node of rank 0 (node1, 127.0.0.1)" in text, text[-3000:]
    assert "requeueing" not in text


def test_slurm_requeue_of_a_running_job_resumes_torchrun_launcher(cluster, tmp_path, monkeypatch, capsys):
    """What a preemption with PreemptMode=REQUEUE does: Slurm signals every process (TERM) and requeues the job
    itself. With the torchrun launcher: torchrun ignores TERM, its workers checkpoint and exit 0, no traceback."""
    out = tmp_path / "runs"
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "preempted", "debug", "--launcher", "torchrun", "--volo", str(FAKE_TRAINER),
        "--env", "FAKE_STEPS=40", "--env", "FAKE_STEP_S=0.15",
    )  # fmt: skip
    wait_for(lambda: log.exists() and log.read_text().count("resumes at step 0") == 4, 180, "4 ranks", log)
    slurm(cluster, "scontrol", "requeue", job_id)
    wait_requeued_and_running(cluster, job_id, log)
    wait_for(lambda: job_field(cluster, job_id, "JobState") == "COMPLETED", 240, "the resumed job", log)
    done = json.loads((out / "preempted" / "fake_done.json").read_text())
    assert done["world"] == 4 and len(done["attempts"]) == 2 and sum(done["attempts"]) == 40, done
    assert done["total"] == 40 * 4  # every step all-reduced over all four ranks, across the requeue
    text = log.read_text()
    assert "signal 15: checkpoint at step" in text and "requeueing job" not in text  # Slurm requeued, not the script
    assert "Traceback" not in text and "SignalException" not in text


def test_dead_rank_ends_the_job_without_requeue(cluster, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    job_id, log = submit(
        cluster, monkeypatch, capsys, out, "dead", "debug", "--volo", str(FAKE_TRAINER),
        "--env", "FAKE_STEPS=400", "--env", "FAKE_STEP_S=0.1", "--env", "FAKE_DIE_RANK=3", "--env", "FAKE_DIE_STEP=5",
    )  # fmt: skip
    wait_for(lambda: job_field(cluster, job_id, "JobState") in ("FAILED", "COMPLETED", "CANCELLED"), 240, "the end",
             log)  # fmt: skip
    text = log.read_text()
    assert job_field(cluster, job_id, "JobState") == "FAILED"
    assert "3: rank 3: dying at step 5" in text  # srun --label: the rank's own line, labelled
    assert "requeueing" not in text and not (out / "dead" / "fake_done.json").exists()
    assert int(re.search(r"srun exited with status (\d+)", text).group(1)) == 5
