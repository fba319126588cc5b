"""sbatch scripts for `volo train` on N nodes x G GPUs, with early warning, checkpoint, requeue and resume.

What the generated script does, top to bottom:
1. #SBATCH header: nodes, tasks, GPUs, partition/account/time, `--signal=B:USR2@<lead>` (the batch shell is warned
   <lead> seconds before the time limit), `--requeue`, `--open-mode=append` (one log across requeues).
2. Master = first host of the allocation (`scontrol show hostnames`), port derived from the job id (two jobs on one
   node do not collide); NCCL settings exported.
3. Stop signals. USR2 (the early warning) is trapped by the batch shell and forwarded to srun, which signals every
   process of the step: the ranks checkpoint at the next step boundary and exit 3, then the script requeues the job
   (up to `max_requeues`, sized from the planned run time) and `volo train --resume auto` continues. TERM (scancel,
   the time limit, a preemption) reaches every process from Slurm itself (not forwarded: srun answers a TERM by
   killing its step): the ranks checkpoint within KillWait and exit 3, and the script does NOT requeue: `scancel`
   ends the job (CANCELLED); a preemption with PreemptMode=REQUEUE is requeued by Slurm and resumes the same way.
4. `srun --label --kill-on-bad-exit=0 --wait=<exit_wait>`: rank-labelled output; once the first rank has exited,
   the others get `exit_wait` seconds, then the step ends, so a dead rank never leaves the rest hanging in a
   collective. Not `--kill-on-bad-exit=1`: it kills the other ranks the moment the first one exits 3 after a clean
   checkpoint stop, and the step then reports 143 instead of 3. Each rank runs under `volo bind` (CPU cores, memory
   node, the node's HCAs).
5. A crash is not requeued: the exit code of the step is the job's. Exit codes: 0 done, 3 stopped after a
   checkpoint, anything else failed.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from volo.distributed.container import mounts_for, parse_mounts
from volo.errors import VoloError

Launcher = Literal["torchrun", "srun"]
DEFAULT_MAX_REQUEUES = 20
"""Requeue budget when no run time can be planned (CPU jobs without --expected-hours)."""
STARTUP_S = 600
"""Seconds of each allocation assumed lost to start-up, resume and the first evaluation when sizing the budget."""


@dataclass(frozen=True)
class SlurmJob:
    """Everything the sbatch script needs; one field per `volo slurm` flag."""

    recipe: str
    """Recipe name or YAML path passed to `volo train` (a path as the ranks see it)."""
    out_dir: Path
    """Folder for run folders on shared storage (host path); the run folder is out_dir/name."""
    name: str = "run"
    """Run folder name (`volo train --name`): one per job, kept across its requeues."""
    nodes: int = 1
    gpus_per_node: int = 8
    """GPUs requested per node; 0 for a CPU-only (gloo) job."""
    procs_per_node: int | None = None
    """Ranks per node; default gpus_per_node (or 1 on CPU)."""
    launcher: Launcher = "srun"
    """"srun": one task per rank (signals, exit codes and labels reach each rank directly); "torchrun": one task
    per node running torchrun (c10d rendezvous), which then ignores TERM/USR2 so Slurm's signal reaches the ranks."""
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
    """Dataset root on shared storage (host path; passed as --set data.path=<path inside the container>)."""
    overrides: tuple[str, ...] = ()
    """Extra `--set key=value` overrides for the recipe."""
    container_image: str | None = None
    """pyxis image: a squashfs path or docker URI such as nvcr.io#nvidia/pytorch:25.01-py3."""
    container_mounts: tuple[str, ...] = ()
    """SRC:DST[:FLAGS] or PATH entries for --container-mounts; paths given to the ranks are translated through them,
    and the output, data and bind-map paths no entry covers are mounted at their own path."""
    container_name: str | None = None
    """pyxis --container-name: the image is imported once per node and reused by later steps (and, with pyxis'
    container_scope=global, by the requeued job); default volo-<name>."""
    signal_lead_s: int = 300
    """Seconds before the time limit at which the batch shell gets USR2."""
    max_requeues: int = DEFAULT_MAX_REQUEUES
    """Requeues after an early warning; `volo slurm` sizes it from the planned run time (`requeue_budget`)."""
    rdzv_port: int | None = None
    """Fixed rendezvous port; None derives it from the job id (20000 + id % 20000)."""
    exit_wait_s: int = 60
    """srun --wait: seconds the other ranks get after the first one exits (a finished or stopped run's ranks all exit
    within a second; after a crash the survivors are ended)."""
    shutdown_timeout_s: int = 240
    """torchrun: its wait between forwarding a signal and SIGKILL (only SIGINT/SIGHUP/SIGQUIT go through it)."""
    bind: bool = True
    """Wrap each rank in `volo bind` (NUMA cores, memory, HCA)."""
    bind_map: Path | None = None
    """Binding map file (host path; mounted into the container)."""
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

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.name


def sbatch_escape(value: str) -> str:
    """Escape `#` for #SBATCH lines, where an unescaped `#` starts a comment (pyxis image names use it)."""
    return value.replace("\\#", "#").replace("#", "\\#")


def parse_slurm_time(text: str) -> int:
    """Seconds of a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise VoloError(f"--time {text!r} is not a Slurm time limit; use HH:MM:SS, D-HH:MM:SS or minutes.")
    days, a, b, c = (int(x) if x is not None else None for x in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        return days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:  # HH:MM:SS
        return a * 3600 + b * 60 + c
    return a * 60 + (b or 0)  # MM[:SS]


def requeue_budget(planned_hours: float, time_limit_s: int, lead_s: int) -> int:
    """Requeues a run of `planned_hours` needs with allocations of `time_limit_s` seconds: every allocation trains
    for limit - lead - STARTUP_S seconds; 25% margin for slow nodes and failed starts, plus 2."""
    usable_s = time_limit_s - lead_s - STARTUP_S
    if usable_s <= 0:
        raise VoloError(
            f"--time ({time_limit_s} s) leaves no training time after --signal-lead ({lead_s} s) and {STARTUP_S} s "
            "of start-up; ask for a longer time limit."
        )
    return math.ceil(planned_hours * 3600 * 1.25 / usable_s) + 2


def _validate(job: SlurmJob) -> None:
    if job.nodes < 1 or job.ranks_per_node < 1:
        raise VoloError(f"--nodes ({job.nodes}) and ranks per node ({job.ranks_per_node}) must be at least 1.")
    if job.gpus_per_node and job.procs_per_node and job.procs_per_node > job.gpus_per_node:
        raise VoloError(
            f"--procs-per-node {job.procs_per_node} exceeds --gpus-per-node {job.gpus_per_node}; use one rank per GPU."
        )
    if not job.out_dir.is_absolute() or (job.data_dir is not None and not job.data_dir.is_absolute()):
        raise VoloError("--out and --data-dir must be absolute paths on storage shared by all nodes.")
    if job.signal_lead_s < 0 or job.max_requeues < 0 or job.exit_wait_s < 1:
        raise VoloError("--signal-lead and --max-requeues must not be negative, --exit-wait must be at least 1.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", job.name):
        raise VoloError(f"--name {job.name!r} must be a plain folder name (letters, digits, '.', '_', '-').")
    for item in job.overrides:
        if "=" not in item:
            raise VoloError(f"--set {item!r} must look like section.key=value.")


def _paths_inside(job: SlurmJob) -> tuple[list[str], dict[str, str]]:
    """(--container-mounts entries, {host path: path inside}) for out_dir, data_dir, bind_map and a recipe file."""
    host = [job.out_dir, job.data_dir, job.bind_map]
    if Path(job.recipe).suffix in (".yaml", ".yml") and Path(job.recipe).is_absolute():
        host.append(Path(job.recipe))
    paths = [PurePosixPath(p) for p in host if p is not None]
    if not job.container_image:
        return [], {str(p): str(p) for p in paths}
    mounts, inside = mounts_for(parse_mounts(job.container_mounts), paths)
    return [m.spec() for m in mounts], {str(k): str(v) for k, v in inside.items()}


def train_command(job: SlurmJob) -> list[str]:
    """`volo train RECIPE --resume auto --out OUT --name NAME [--set ...]` as an argv list (container paths)."""
    _, inside = _paths_inside(job)
    recipe = inside.get(job.recipe, job.recipe)
    command = [job.volo, "train", recipe, "--resume", "auto", "--out", inside[str(job.out_dir)], "--name", job.name]
    sets = ([f"data.path={inside[str(job.data_dir)]}"] if job.data_dir else []) + list(job.overrides)
    for item in sets:
        command += ["--set", item]
    return command


def _rank_command(job: SlurmJob) -> list[str]:
    command = train_command(job)
    if not job.bind:
        return command
    _, inside = _paths_inside(job)
    bind = [job.volo, "bind"] + (["--map", inside[str(job.bind_map)]] if job.bind_map else [])
    return [*bind, "--", *command]


def _container_flags(job: SlurmJob) -> list[str]:
    if not job.container_image:
        return []
    mounts, _ = _paths_inside(job)
    name = job.container_name or f"volo-{job.name}"
    flags = [f"--container-image={job.container_image}", f"--container-name={name}", "--no-container-entrypoint"]
    return flags + [f"--container-mounts={','.join(mounts)}"]


def srun_command(job: SlurmJob) -> str:
    """The srun line (a shell string; $VARS expand in the batch shell or, quoted, in each task)."""
    srun = ["srun", "--label", "--kill-on-bad-exit=0", f"--wait={job.exit_wait_s}", "--cpu-bind=none"]
    srun.append(f"--nodes={job.nodes}")
    if job.launcher == "torchrun":
        srun += ["--ntasks-per-node=1", *_container_flags(job)]
        # torchrun ignores TERM/USR2 (SIG_IGN survives exec): Slurm signals every process of the step, so the ranks
        # get them directly and exit 0 after their checkpoint; torchrun would turn them into a SignalException.
        torchrun = [
            "torchrun",
            f"--nnodes={job.nodes}",
            f"--nproc-per-node={job.ranks_per_node}",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT",
            "--rdzv-id=$SLURM_JOB_ID",
            "--max-restarts=0",
            "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT",
            f"--shutdown-timeout={job.shutdown_timeout_s}",
            "--no-python",
        ]
        task = f"trap '' TERM USR2; exec {' '.join(torchrun)} {shlex.join(_rank_command(job))}"
        return " \\\n    ".join([shlex.join(srun), f"bash -c {shlex.quote(task)}"])
    srun += [f"--ntasks-per-node={job.ranks_per_node}", *_container_flags(job)]
    task = (
        "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
        f"LOCAL_WORLD_SIZE={job.ranks_per_node}; exec {shlex.join(_rank_command(job))}"
    )
    return " \\\n    ".join([shlex.join(srun), f"bash -c {shlex.quote(task)}"])


def _header(job: SlurmJob) -> list[str]:
    log = job.run_dir / "slurm-%j.out"
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
    options += list(job.extra_sbatch)
    return [f"#SBATCH {sbatch_escape(option)}" for option in options]


def render_sbatch(job: SlurmJob) -> str:
    """The complete sbatch script for `job` (see the module docstring for what it does)."""
    _validate(job)
    parse_slurm_time(job.time)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in job.env.items())
    shape = f"{job.nodes} node(s) x {job.ranks_per_node} rank(s), launcher {job.launcher}"
    port = str(job.rdzv_port) if job.rdzv_port else "$((20000 + SLURM_JOB_ID % 20000))"
    return f"""#!/bin/bash
# Generated by `volo slurm`: {shape}, recipe {job.recipe}, run folder {job.run_dir}.
# Exit codes: 0 done, 3 stopped after a checkpoint (resubmit this script to continue), anything else failed.
{chr(10).join(_header(job))}

set -uo pipefail
RUN_DIR={shlex.quote(str(job.run_dir))}
MAX_REQUEUES={job.max_requeues}
mkdir -p "$RUN_DIR"
log() {{ echo "[volo-slurm $(date -u +%FT%TZ)] $*"; }}
log "job $SLURM_JOB_ID start (restart ${{SLURM_RESTART_COUNT:-0}} of at most $MAX_REQUEUES) on $SLURM_JOB_NODELIST"

# Rendezvous: the first host of the allocation runs rank 0; the port follows the job id.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
MASTER_PORT={port}
export MASTER_ADDR MASTER_PORT
{exports}

# USR2 ({job.signal_lead_s} s before the time limit): forward to the ranks, which checkpoint and exit 3; requeue below.
# TERM (scancel, time limit, preemption): Slurm signals every process of the job itself (within KillWait the ranks
# checkpoint and exit 3); not forwarded (srun would answer TERM by killing the step) and never requeued here.
STOP_SIGNAL=""
SRUN_PID=""
forward() {{
    STOP_SIGNAL=USR2
    log "got SIGUSR2: forwarding to the ranks (srun $SRUN_PID)"
    [[ -n "$SRUN_PID" ]] && kill -s USR2 "$SRUN_PID" 2>/dev/null
}}
trap forward USR2
trap 'STOP_SIGNAL=TERM; log "got SIGTERM (scancel, time limit or preemption): the ranks checkpoint; no requeue"' TERM

{srun_command(job)} &
SRUN_PID=$!
# `wait` returns early whenever a trapped signal arrives: wait until srun has really exited.
while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; done
wait "$SRUN_PID"
STATUS=$?
log "srun exited with status $STATUS"

if [[ "$STOP_SIGNAL" == USR2 ]] && (( STATUS == 0 || STATUS == 3 )); then
    if (( ${{SLURM_RESTART_COUNT:-0}} >= MAX_REQUEUES )); then
        log "checkpoint written; $MAX_REQUEUES requeues used up: not requeueing (resubmit to continue)"
        exit 3
    fi
    log "requeueing job $SLURM_JOB_ID (resumes with --resume auto)"
    scontrol requeue "$SLURM_JOB_ID" || log "scontrol requeue failed"
    exit 0
fi
if [[ -n "$STOP_SIGNAL" ]] || (( STATUS == 3 )); then
    log "ranks stopped after a checkpoint (${{STOP_SIGNAL:+SIG$STOP_SIGNAL, }}status $STATUS): not requeued here"
    (( STATUS == 0 || STATUS == 3 )) && exit 3
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
