"""The generated sbatch script, checked as text (and with `bash -n`); no Slurm needed."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from volo.cli.main import main as volo_main
from volo.distributed.process_group import check_master_is_rank0_host
from volo.distributed.slurm import (
    STARTUP_S,
    SlurmJob,
    parse_slurm_time,
    render_sbatch,
    requeue_budget,
    sbatch_escape,
    srun_command,
    train_command,
)
from volo.errors import VoloError


def sbatch_options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_five_node_torchrun_script(capsys):
    argv = ["slurm", "d5_224", "--nodes", "5", "--partition", "batch", "--account", "proj", "--time", "04:00:00",
            "--data-dir", "/lustre/imagenet", "--out", "/lustre/runs", "--name", "d5", "--set", "train.batch_size=44",
            "--container-image", "nvcr.io#nvidia/pytorch:25.01-py3", "--container-mounts", "/lustre:/lustre",
            "--launcher", "torchrun", "--dry-run"]  # fmt: skip
    assert volo_main(argv) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_options(script) == [
        "--job-name=volo-d5",
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
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in script  # two jobs on one node: two ports
    assert "trap forward USR2" in script and "trap 'STOP_SIGNAL=TERM; log" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    srun = script[script.index("srun --label") : script.index(" &\nSRUN_PID=$!")]
    assert srun.split()[:11] == [
        "srun", "--label", "--kill-on-bad-exit=0", "--wait=60", "--cpu-bind=none", "--nodes=5", "--ntasks-per-node=1",
        "'--container-image=nvcr.io#nvidia/pytorch:25.01-py3'", "--container-name=volo-d5", "--no-container-entrypoint",
        "--container-mounts=/lustre:/lustre",
    ]  # fmt: skip
    task = srun.split("bash -c ", 1)[1]
    assert shlex.split(task)[0].split() == [
        "trap", "''", "TERM", "USR2;", "exec",
        "torchrun", "--nnodes=5", "--nproc-per-node=8", "--rdzv-backend=c10d",
        "--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT", "--rdzv-id=$SLURM_JOB_ID", "--max-restarts=0",
        "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT", "--shutdown-timeout=240", "--no-python",
        "volo", "bind", "--", "volo", "train", "d5_224", "--resume", "auto", "--out", "/lustre/runs", "--name", "d5",
        "--set", "data.path=/lustre/imagenet", "--set", "train.batch_size=44",
    ]  # fmt: skip
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(
    ("mounts", "out_inside", "data_inside", "mount_flag"),
    [
        # SRC:DST: host /lustre appears at /mnt/lustre; every path handed to the ranks is translated
        ("/lustre:/mnt/lustre", "/mnt/lustre/runs", "/mnt/lustre/imagenet",
         "/lustre:/mnt/lustre,/home/me/map.yaml:/home/me/map.yaml"),
        # PATH: mounted at its own path; a more specific SRC:DST:FLAGS entry wins for the data
        ("/lustre,/lustre/imagenet:/data:ro", "/lustre/runs", "/data",
         "/lustre:/lustre,/lustre/imagenet:/data:ro,/home/me/map.yaml:/home/me/map.yaml"),
    ],
)  # fmt: skip
def test_container_paths_are_translated_through_the_mounts(mounts, out_inside, data_inside, mount_flag):
    job = SlurmJob(recipe="d1_224", out_dir=Path("/lustre/runs"), name="r1", data_dir=Path("/lustre/imagenet"),
                   container_image="/lustre/images/volo.sqsh", container_mounts=tuple(mounts.split(",")),
                   bind_map=Path("/home/me/map.yaml"))  # fmt: skip
    script = render_sbatch(job)
    assert f"--container-mounts={mount_flag}" in script and "--container-name=volo-r1" in script
    assert "--output=/lustre/runs/r1/slurm-%j.out" in sbatch_options(script)  # the log: a host path
    assert "RUN_DIR=/lustre/runs/r1\n" in script
    line = srun_command(job)
    assert f"volo bind --map /home/me/map.yaml -- volo train d1_224 --resume auto --out {out_inside} --name r1" in line
    assert f"--set data.path={data_inside}" in line


def test_container_mount_entries_are_checked():
    job = SlurmJob(recipe="d1_224", out_dir=Path("/s/run"), container_image="img", container_mounts=("data:/data",))
    with pytest.raises(VoloError, match="must be absolute"):
        render_sbatch(job)
    with pytest.raises(VoloError, match="SRC:DST"):
        render_sbatch(SlurmJob(**{**job.__dict__, "container_mounts": ("/a:/b:ro:x",)}))


def test_hash_in_sbatch_lines_is_escaped():
    job = SlurmJob(recipe="d1_224", out_dir=Path("/shared/run"), extra_sbatch=("--comment=a#b",))
    assert "--comment=a\\#b" in sbatch_options(render_sbatch(job))
    assert sbatch_escape("a\\#b#c") == "a\\#b\\#c"  # already-escaped stays single-escaped


def test_one_task_per_gpu_launcher():
    job = SlurmJob(recipe="d1_224", out_dir=Path("/s/run"), nodes=2, gpus_per_node=4, launcher="srun",
                   bind_map=Path("/s/map.yaml"), cpus_per_node=64)  # fmt: skip
    script = render_sbatch(job)
    assert "--ntasks-per-node=4" in sbatch_options(script) and "--cpus-per-task=16" in sbatch_options(script)
    line = srun_command(job)
    assert line.startswith(
        "srun --label --kill-on-bad-exit=0 --wait=60 --cpu-bind=none --nodes=2 --ntasks-per-node=4 \\\n"
    )
    assert line.endswith(
        "bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS LOCAL_WORLD_SIZE=4; "
        "exec volo bind --map /s/map.yaml -- volo train d1_224 --resume auto --out /s/run --name run'"
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
    assert "--ntasks-per-node=2" in script and "LOCAL_WORLD_SIZE=2" in script and " bind " not in script
    assert train_command(job) == ["volo", "train", "debug", "--resume", "auto", "--out", "/tmp/x", "--name", "run"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"out_dir": Path("relative/run")}, "absolute paths"),
        ({"nodes": 0}, "at least 1"),
        ({"gpus_per_node": 4, "procs_per_node": 8}, "exceeds --gpus-per-node"),
        ({"overrides": ("train.batch_size",)}, "section.key=value"),
        ({"name": "../up"}, "plain folder name"),
        ({"time": "4h"}, "not a Slurm time limit"),
    ],
)
def test_invalid_jobs_are_sentences(change, message):
    job = SlurmJob(recipe="d1_224", out_dir=Path("/s/run"))
    with pytest.raises(VoloError, match=message):
        render_sbatch(SlurmJob(**{**job.__dict__, **change}))


def test_write_script_without_submit(tmp_path, capsys):
    out = tmp_path / "runs"
    assert volo_main(["slurm", "debug", "--out", str(out), "--gpus-per-node", "0", "--name", "a"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"wrote {out / 'a' / 'job.sbatch'}"
    assert (out / "a" / "job.sbatch").read_text().startswith("#!/bin/bash")
    assert volo_main(["slurm", "debug", "--out", "rel", "--dry-run"]) == 2
    assert "absolute" in capsys.readouterr().err


def test_two_jobs_of_one_recipe_get_two_run_folders(tmp_path, capsys):
    out = tmp_path / "runs"
    for _ in range(2):
        assert volo_main(["slurm", "debug", "--out", str(out), "--gpus-per-node", "0"]) == 0
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2 and all(f.startswith("debug-") for f in folders), folders
    for folder in folders:
        assert f"--name {folder}" in (out / folder / "job.sbatch").read_text()


@pytest.mark.parametrize(
    "argv",
    [["debgu"], ["debug", "--set", "train.batch_size=abc"], ["debug", "--set", "train.bogus=1"],
     ["debug", "--set", "optim.lr_base=fast"], ["debug", "--set", "nosection.key=1"]],
)  # fmt: skip
def test_slurm_refuses_what_train_refuses_with_the_same_line(argv, tmp_path, capsys):
    assert volo_main(["train", *argv, "--print-config"]) == 2
    train_err = capsys.readouterr().err.strip().splitlines()
    assert volo_main(["slurm", *argv, "--out", str(tmp_path / "runs"), "--gpus-per-node", "0"]) == 2
    slurm_err = capsys.readouterr().err.strip().splitlines()
    assert len(train_err) == len(slurm_err) == 1
    assert slurm_err[0].removeprefix("volo slurm: ") == train_err[0].removeprefix("volo train: ")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_requeue_budget_covers_the_planned_run(capsys):
    assert parse_slurm_time("04:00:00") == 4 * 3600 and parse_slurm_time("10") == 600
    assert parse_slurm_time("1-12") == 36 * 3600 and parse_slurm_time("2-00:30:00") == 48 * 3600 + 1800
    # D5 on one DGX A100: ~220 h (310 epochs at the write-up's ~500 img/s); the old fixed 20 x 4 h gave 84 h.
    argv = ["slurm", "d5_224", "--nodes", "1", "--out", "/lustre/runs", "--name", "d5", "--dry-run"]
    assert volo_main(argv) == 0
    budget = int(re.search(r"MAX_REQUEUES=(\d+)", capsys.readouterr().out).group(1))
    usable_h = (4 * 3600 - 300 - STARTUP_S) / 3600
    assert (budget + 1) * usable_h > 220 * 1.25 and budget < 100
    assert requeue_budget(100, 4 * 3600, 300) == 36  # ceil(100 h x 1.25 / 3.75 h) + 2
    assert volo_main([*argv, "--expected-hours", "10"]) == 0
    assert "MAX_REQUEUES=6\n" in capsys.readouterr().out
    assert volo_main([*argv, "--max-requeues", "7"]) == 0
    assert "MAX_REQUEUES=7\n" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    ("sig", "srun_gets", "calls_after", "exit_code", "said"),
    [
        # the early warning: forwarded to srun, then one requeue
        (signal.SIGUSR2, ["srun-got-USR2"], ["scontrol requeue 77"], 0, "requeueing job 77"),
        # scancel / time limit / preemption: Slurm signals the ranks itself; srun is not told, nothing requeued
        (signal.SIGTERM, [], [], 3, "not requeued here"),
    ],
    ids=["usr2-requeues", "term-does-not"],
)
def test_stop_signals_in_bash(tmp_path, sig, srun_gets, calls_after, exit_code, said):
    """Run the script with fake srun/scontrol; the ranks (fake srun) exit 3 after their checkpoint."""
    job = SlurmJob(recipe="debug", out_dir=tmp_path / "run", gpus_per_node=0, bind=False, volo="true")
    script = render_sbatch(job)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    # srun: announces itself, exits 3 on USR2 (forwarded: the ranks checkpoint) or when the test's "Slurm" says so.
    (bin_dir / "srun").write_text(
        f"#!/bin/bash\ntrap 'echo srun-got-USR2 >> {calls}; exit 3' USR2\necho srun-started >> {calls}\n"
        f"for i in $(seq 100); do sleep 0.1; [[ -f {tmp_path}/ranks-stopped ]] && exit 3; done\nexit 7\n"
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
        proc.send_signal(sig)
        if sig == signal.SIGTERM:  # Slurm's TERM reached the ranks as well: they checkpoint and exit 3
            (tmp_path / "ranks-stopped").touch()
        proc.wait(timeout=30)
    out = log.read_text()
    assert proc.returncode == exit_code, out
    assert calls.read_text().splitlines() == ["srun-started", *srun_gets, *calls_after]
    assert f"got {sig.name}" in out and "srun exited with status 3" in out and said in out
    assert "MASTER_PORT=20077" in subprocess.run(
        ["bash", "-c", "SLURM_JOB_ID=77; echo MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip


def test_rank0_refuses_a_master_that_is_not_its_node():
    """Under srun, rank 0 hosts the rendezvous store: a MASTER_ADDR of another node is refused at once."""
    env = {"RANK": "0", "SLURMD_NODENAME": "localhost", "SLURM_JOB_NUM_NODES": "2"}
    with pytest.raises(VoloError, match=r"MASTER_ADDR=127\.0\.0\.2 \(127\.0\.0\.2\) is not the node of rank 0"):
        check_master_is_rank0_host({**env, "MASTER_ADDR": "127.0.0.2"})
    check_master_is_rank0_host({**env, "MASTER_ADDR": "127.0.0.1"})  # its own address
    check_master_is_rank0_host({**env, "MASTER_ADDR": "127.0.0.2", "RANK": "1"})  # only rank 0 can tell
    check_master_is_rank0_host({**env, "MASTER_ADDR": "127.0.0.2", "TORCHELASTIC_RUN_ID": "x"})  # torchrun: its own
    check_master_is_rank0_host({**env, "MASTER_ADDR": "no-such-host.invalid"})  # unresolvable: nothing certain
