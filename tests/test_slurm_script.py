"""The generated sbatch script, checked as text (and with `bash -n`); no Slurm needed."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from volo.cli.main import main as volo_main
from volo.distributed.slurm import SlurmJob, render_sbatch, sbatch_escape, srun_command, train_command
from volo.errors import VoloError


def sbatch_options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_five_node_torchrun_script(capsys):
    argv = ["slurm", "d5_224", "--nodes", "5", "--partition", "batch", "--account", "proj", "--time", "04:00:00",
            "--data-dir", "/lustre/imagenet", "--out", "/lustre/runs/d5", "--set", "train.batch_size=44",
            "--container-image", "nvcr.io#nvidia/pytorch:25.01-py3", "--container-mounts", "/lustre:/lustre",
            "--dry-run"]  # fmt: skip
    assert volo_main(argv) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_options(script) == [
        "--job-name=volo-d5_224",
        "--nodes=5",
        "--ntasks-per-node=1",
        "--time=04:00:00",
        "--signal=B:USR2@300",
        "--requeue",
        "--open-mode=append",
        "--output=/lustre/runs/d5/slurm-%j.out",
        "--gpus-per-node=8",
        "--partition=batch",
        "--account=proj",
        "--mem=0",
        "--exclusive",
    ]
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in script
    assert "trap 'forward USR2' USR2" in script and "trap 'forward TERM' TERM" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    srun = script[script.index("srun --kill-on-bad-exit=1") : script.index(" &\nSRUN_PID=$!")]
    assert srun.split() == [
        "srun", "--kill-on-bad-exit=1", "--cpu-bind=none", "--nodes=5", "--ntasks-per-node=1",
        "'--container-image=nvcr.io#nvidia/pytorch:25.01-py3'", "--no-container-entrypoint",
        "--container-mounts=/lustre:/lustre", "\\",
        "torchrun", "--nnodes=5", "--nproc-per-node=8", "--rdzv-backend=c10d",
        '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"', '--rdzv-id="$SLURM_JOB_ID"', "--max-restarts=0",
        "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2", "--shutdown-timeout=240", "--no-python", "\\",
        "volo", "bind", "--", "volo", "train", "d5_224", "--resume", "auto", "--out", "/lustre/runs/d5",
        "--set", "data.path=/lustre/imagenet", "--set", "train.batch_size=44",
    ]  # fmt: skip
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_container_flags_in_sbatch_lines_escape_hash():
    job = SlurmJob(
        recipe="d1_224",
        out_dir=Path("/shared/run"),
        container_image="nvcr.io#nvidia/pytorch:25.01-py3",
        container_in_sbatch=True,
        container_mounts=("/data:/data",),
        data_dir=Path("/shared/data"),
    )
    options = sbatch_options(render_sbatch(job))
    assert "--container-image=nvcr.io\\#nvidia/pytorch:25.01-py3" in options
    assert "--container-mounts=/data:/data,/shared/data:/shared/data,/shared/run:/shared/run" in options
    assert "--no-container-entrypoint" in options
    assert sbatch_escape("a\\#b#c") == "a\\#b\\#c"  # already-escaped stays single-escaped


def test_one_task_per_gpu_launcher():
    job = SlurmJob(recipe="d1_224", out_dir=Path("/s/run"), nodes=2, gpus_per_node=4, launcher="srun",
                   bind_map=Path("/s/map.yaml"), cpus_per_node=64)  # fmt: skip
    script = render_sbatch(job)
    assert "--ntasks-per-node=4" in sbatch_options(script) and "--cpus-per-task=16" in sbatch_options(script)
    line = srun_command(job)
    assert line.startswith("srun --kill-on-bad-exit=1 --cpu-bind=none --nodes=2 --ntasks-per-node=4 \\\n")
    assert line.endswith(
        "bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS LOCAL_WORLD_SIZE=4; "
        "exec volo bind --map /s/map.yaml -- volo train d1_224 --resume auto --out /s/run'"
    )
    assert "torchrun" not in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_cpu_job_and_no_bind():
    job = SlurmJob(recipe="debug", out_dir=Path("/tmp/x"), nodes=2, gpus_per_node=0, procs_per_node=2, bind=False,
                   mem=None, exclusive=False, signal_lead_s=120, max_requeues=3)  # fmt: skip
    script = render_sbatch(job)
    options = sbatch_options(script)
    assert not any(o.startswith(("--gpus-per-node", "--mem", "--exclusive")) for o in options)
    assert "--signal=B:USR2@120" in options and "MAX_REQUEUES=3" in script
    assert "--nproc-per-node=2" in script and " bind " not in script
    assert train_command(job) == ["volo", "train", "debug", "--resume", "auto", "--out", "/tmp/x"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"out_dir": Path("relative/run")}, "absolute paths"),
        ({"nodes": 0}, "at least 1"),
        ({"gpus_per_node": 4, "procs_per_node": 8}, "exceeds --gpus-per-node"),
        ({"overrides": ("train.batch_size",)}, "section.key=value"),
    ],
)
def test_invalid_jobs_are_sentences(change, message):
    job = SlurmJob(recipe="d1_224", out_dir=Path("/s/run"))
    with pytest.raises(VoloError, match=message):
        render_sbatch(SlurmJob(**{**job.__dict__, **change}))


def test_write_script_without_submit(tmp_path, capsys):
    out = tmp_path / "run"
    assert volo_main(["slurm", "debug", "--out", str(out), "--gpus-per-node", "0"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'job.sbatch'}"
    assert (out / "job.sbatch").read_text().startswith("#!/bin/bash")
    assert volo_main(["slurm", "debug", "--out", "rel", "--dry-run"]) == 2
    assert "absolute" in capsys.readouterr().err


def test_crash_is_not_requeued(tmp_path):
    """A step that fails without a signal: the job exits with the step's status and scontrol is never called."""
    job = SlurmJob(recipe="debug", out_dir=tmp_path / "run", gpus_per_node=0, bind=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "srun").write_text("#!/bin/bash\nexit 7\n")
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\nif [[ "$1" == show ]]; then echo node1; else echo "scontrol $*" >> {calls}; fi\n'
    )
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "78", "SLURM_JOB_NODELIST": "node1"}
    done = subprocess.run(["bash", "-c", render_sbatch(job)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 7 and not calls.exists()
    assert "srun exited with status 7" in done.stdout and "requeueing" not in done.stdout


def test_requeue_logic_in_bash(tmp_path):
    """Run the script with fake srun/scontrol: a USR2 during the step leads to exactly one requeue."""
    job = SlurmJob(recipe="debug", out_dir=tmp_path / "run", gpus_per_node=0, bind=False, volo="true")
    script = render_sbatch(job)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    # srun: announces itself, runs until it gets USR2, then exits 0 (as ranks do after their checkpoint).
    (bin_dir / "srun").write_text(
        f"#!/bin/bash\ntrap 'echo srun-got-USR2 >> {calls}; exit 0' USR2\necho srun-started >> {calls}\n"
        "for i in $(seq 100); do sleep 0.1; done\nexit 7\n"
    )
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\nif [[ "$1" == show ]]; then echo node1; else echo "scontrol $*" >> {calls}; fi\n'
    )
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node1"}
    log = tmp_path / "job.log"
    with log.open("w") as stdout:
        proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, stdout=stdout, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (calls.exists() and "srun-started" in calls.read_text()):
            time.sleep(0.05)
        time.sleep(0.3)  # let srun install its trap
        proc.send_signal(signal.SIGUSR2)
        proc.wait(timeout=30)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert calls.read_text().splitlines() == ["srun-started", "srun-got-USR2", "scontrol requeue 77"]
    assert "got SIGUSR2: forwarding" in out and "srun exited with status 0" in out and "requeueing job 77" in out
