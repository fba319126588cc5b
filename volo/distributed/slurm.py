"""sbatch scripts for `volo train` on N nodes x G GPUs, with early warning, checkpoint, requeue and resume.

What the generated script does, top to bottom:
1. #SBATCH header: nodes, tasks, GPUs, partition/account/time, `--signal=B:USR2@<lead>` (the batch shell is warned
   <lead> seconds before the time limit), `--requeue`, `--open-mode=append` (one log across requeues).
2. Master = first host of the allocation (`scontrol show hostnames`); NCCL settings exported.
3. Traps USR2 (early warning) and TERM (preemption, scancel) in the batch shell and forwards the signal to srun,
   which forwards it to the tasks: torchrun passes it on to its workers (`--signals-to-handle`), plain tasks get
   it directly. The trainer saves a checkpoint at the next step boundary and exits 0.
4. `srun --kill-on-bad-exit=1`: when one rank dies the whole step ends instead of hanging in a collective.
   Each rank runs under `volo bind` (CPU cores, memory node and HCA nearest its GPU).
5. After a forwarded signal: `scontrol requeue $SLURM_JOB_ID` (up to `max_requeues`); the requeued job runs the same
   script and `volo train ... --resume auto` continues from the newest checkpoint. A crash without a signal is not
   requeued: the exit code of the step is the job's.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from volo.errors import VoloError

Launcher = Literal["torchrun", "srun"]


@dataclass(frozen=True)
class SlurmJob:
    """Everything the sbatch script needs; one field per `volo slurm` flag."""

    recipe: str
    """Recipe name or YAML path passed to `volo train`."""
    out_dir: Path
    """Run folder on shared storage (checkpoints, logs); must be visible from every node."""
    nodes: int = 1
    gpus_per_node: int = 8
    """GPUs requested per node; 0 for a CPU-only (gloo) job."""
    procs_per_node: int | None = None
    """Ranks per node; default gpus_per_node (or 1 on CPU)."""
    launcher: Launcher = "torchrun"
    """"torchrun": one task per node running torchrun (c10d rendezvous); "srun": one task per rank."""
    job_name: str = "volo"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "04:00:00"
    """Time limit per allocation (requeues get a fresh one)."""
    cpus_per_node: int | None = None
    """CPUs per node for the job (divided among tasks); None leaves Slurm's default."""
    mem: str | None = "0"
    """--mem per node ("0": all of it); None leaves it out."""
    exclusive: bool = True
    data_dir: Path | None = None
    """Dataset root on shared storage (passed as --set data.path=...)."""
    overrides: tuple[str, ...] = ()
    """Extra `--set key=value` overrides for the recipe."""
    container_image: str | None = None
    """pyxis image: a squashfs path or docker URI such as nvcr.io#nvidia/pytorch:25.01-py3."""
    container_mounts: tuple[str, ...] = ()
    """SRC:DST pairs for --container-mounts; data and output folders are added automatically."""
    container_in_sbatch: bool = False
    """Also put the container flags on #SBATCH lines (pyxis >= 0.12 applies them to every step)."""
    signal_lead_s: int = 300
    """Seconds before the time limit at which the batch shell gets USR2."""
    max_requeues: int = 20
    rdzv_port: int = 29500
    shutdown_timeout_s: int = 240
    """torchrun's wait between forwarding the signal and SIGKILL (the checkpoint must fit in it)."""
    bind: bool = True
    """Wrap each rank in `volo bind` (NUMA cores, memory, HCA)."""
    bind_map: Path | None = None
    volo: str = "volo"
    """The volo executable on the nodes (inside the container when one is used)."""
    env: dict[str, str] = field(
        default_factory=lambda: {
            "NCCL_DEBUG": "WARN",
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
    )
    """Exported in the batch shell (srun passes it on to every task)."""
    extra_sbatch: tuple[str, ...] = ()
    """Further sbatch options, e.g. "--constraint=a100"."""

    @property
    def ranks_per_node(self) -> int:
        return self.procs_per_node or self.gpus_per_node or 1


def sbatch_escape(value: str) -> str:
    """Escape `#` for #SBATCH lines, where an unescaped `#` starts a comment (pyxis image names use it)."""
    return value.replace("\\#", "#").replace("#", "\\#")


def _validate(job: SlurmJob) -> None:
    if job.nodes < 1 or job.ranks_per_node < 1:
        raise VoloError(f"--nodes ({job.nodes}) and ranks per node ({job.ranks_per_node}) must be at least 1.")
    if job.gpus_per_node and job.procs_per_node and job.procs_per_node > job.gpus_per_node:
        raise VoloError(
            f"--procs-per-node {job.procs_per_node} exceeds --gpus-per-node {job.gpus_per_node}; use one rank per GPU."
        )
    if not job.out_dir.is_absolute() or (job.data_dir is not None and not job.data_dir.is_absolute()):
        raise VoloError("--out and --data-dir must be absolute paths on storage shared by all nodes.")
    if job.signal_lead_s < 0 or job.max_requeues < 0:
        raise VoloError("--signal-lead and --max-requeues must not be negative.")
    for item in job.overrides:
        if "=" not in item:
            raise VoloError(f"--set {item!r} must look like section.key=value.")


def train_command(job: SlurmJob) -> list[str]:
    """`volo train RECIPE --resume auto --out OUT [--set ...]` as an argv list."""
    command = [job.volo, "train", job.recipe, "--resume", "auto", "--out", str(job.out_dir)]
    sets = ([f"data.path={job.data_dir}"] if job.data_dir else []) + list(job.overrides)
    for item in sets:
        command += ["--set", item]
    return command


def _rank_command(job: SlurmJob) -> list[str]:
    command = train_command(job)
    if not job.bind:
        return command
    bind = [job.volo, "bind"] + (["--map", str(job.bind_map)] if job.bind_map else [])
    return [*bind, "--", *command]


def _container_flags(job: SlurmJob) -> list[str]:
    if not job.container_image:
        return []
    mounts = list(job.container_mounts)
    for folder in (job.data_dir, job.out_dir):
        if folder is not None and not any(folder.is_relative_to(m.split(":")[0]) for m in mounts):
            mounts.append(f"{folder}:{folder}")
    flags = [f"--container-image={job.container_image}", "--no-container-entrypoint"]
    if mounts:
        flags.append(f"--container-mounts={','.join(mounts)}")
    return flags


def srun_command(job: SlurmJob) -> str:
    """The srun line (a shell string; $VARS expand in the batch shell or, quoted, in each task)."""
    srun = ["srun", "--kill-on-bad-exit=1", "--cpu-bind=none", f"--nodes={job.nodes}"]
    if job.launcher == "torchrun":
        srun += ["--ntasks-per-node=1", *_container_flags(job)]
        torchrun = [
            "torchrun",
            f"--nnodes={job.nodes}",
            f"--nproc-per-node={job.ranks_per_node}",
            "--rdzv-backend=c10d",
            '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"',
            '--rdzv-id="$SLURM_JOB_ID"',
            "--max-restarts=0",
            "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2",
            f"--shutdown-timeout={job.shutdown_timeout_s}",
            "--no-python",
        ]
        return " \\\n    ".join([shlex.join(srun), " ".join(torchrun), shlex.join(_rank_command(job))])
    srun += [f"--ntasks-per-node={job.ranks_per_node}", *_container_flags(job)]
    task = (
        "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
        f"LOCAL_WORLD_SIZE={job.ranks_per_node}; exec {shlex.join(_rank_command(job))}"
    )
    return " \\\n    ".join([shlex.join(srun), f"bash -c {shlex.quote(task)}"])


def _header(job: SlurmJob) -> list[str]:
    log = job.out_dir / "slurm-%j.out"
    options = [
        f"--job-name={job.job_name}",
        f"--nodes={job.nodes}",
        f"--ntasks-per-node={1 if job.launcher == 'torchrun' else job.ranks_per_node}",
        f"--time={job.time}",
        f"--signal=B:USR2@{job.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={log}",
    ]
    if job.gpus_per_node:
        options.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.cpus_per_node:
        tasks = 1 if job.launcher == "torchrun" else job.ranks_per_node
        options.append(f"--cpus-per-task={max(1, job.cpus_per_node // tasks)}")
    for flag, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos), ("mem", job.mem)):
        if value is not None:
            options.append(f"--{flag}={value}")
    if job.exclusive:
        options.append("--exclusive")
    if job.container_in_sbatch:
        options += _container_flags(job)
    options += list(job.extra_sbatch)
    return [f"#SBATCH {sbatch_escape(option)}" for option in options]


def render_sbatch(job: SlurmJob) -> str:
    """The complete sbatch script for `job` (see the module docstring for what it does)."""
    _validate(job)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in job.env.items())
    shape = f"{job.nodes} node(s) x {job.ranks_per_node} rank(s), launcher {job.launcher}"
    return f"""#!/bin/bash
# Generated by `volo slurm`: {shape}, recipe {job.recipe}.
{chr(10).join(_header(job))}

set -uo pipefail
OUT_DIR={shlex.quote(str(job.out_dir))}
MAX_REQUEUES={job.max_requeues}
mkdir -p "$OUT_DIR"
log() {{ echo "[volo-slurm $(date -u +%FT%TZ)] $*"; }}
log "job $SLURM_JOB_ID start (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST"

# Rendezvous: the first host of the allocation is the master (and a worker).
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
MASTER_PORT={job.rdzv_port}
export MASTER_ADDR MASTER_PORT
{exports}

# Early warning (USR2, {job.signal_lead_s} s before the limit) and preemption (TERM): forward to the ranks,
# which checkpoint at the next step and exit 0; then requeue below.
STOP_SIGNAL=""
SRUN_PID=""
forward() {{
    STOP_SIGNAL=$1
    log "got SIG$1: forwarding to the ranks (srun $SRUN_PID)"
    [[ -n "$SRUN_PID" ]] && kill -s "$1" "$SRUN_PID" 2>/dev/null
}}
trap 'forward USR2' USR2
trap 'forward TERM' TERM

{srun_command(job)} &
SRUN_PID=$!
# `wait` returns early whenever a trapped signal arrives: wait until srun has really exited.
while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; done
wait "$SRUN_PID"
STATUS=$?
log "srun exited with status $STATUS"

if [[ -n "$STOP_SIGNAL" ]]; then
    if (( ${{SLURM_RESTART_COUNT:-0}} >= MAX_REQUEUES )); then
        log "stopped by SIG$STOP_SIGNAL after $MAX_REQUEUES requeues: not requeueing again"
        exit 1
    fi
    log "requeueing job $SLURM_JOB_ID (resumes with --resume auto)"
    scontrol requeue "$SLURM_JOB_ID" || log "scontrol requeue failed (a preemption may already requeue it)"
    exit 0
fi
exit "$STATUS"
"""


def submit(script_path: Path) -> str:
    """Submit with `sbatch --parsable`; returns the job id."""
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise VoloError("sbatch is not on PATH: run `volo slurm --submit` on a Slurm login node.") from None
    if result.returncode != 0:
        raise VoloError(f"sbatch refused {script_path}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]
