"""`volo slurm`: write (and with --submit, submit) the sbatch script for a multi-node training run.

    volo slurm d5_224 --nodes 5 --gpus-per-node 8 --partition batch --account proj --time 04:00:00 \\
        --data-dir /lustre/imagenet --out /lustre/runs/d5 \\
        --container-image nvcr.io#nvidia/pytorch:25.01-py3 --container-mounts /lustre:/lustre --dry-run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from volo.distributed.slurm import SlurmJob, render_sbatch, submit
from volo.errors import VoloError

DEFAULTS = SlurmJob(recipe="", out_dir=Path("."))
"""The job's own defaults, shown by the flags (one source: `SlurmJob`)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slurm",
        help="write/submit an sbatch script: N nodes x G GPUs, requeue + resume",
        description="Generate an sbatch script running `volo train RECIPE --resume auto` on N nodes x G GPUs with "
        "an early-warning signal, checkpoint, requeue and automatic resume (see docs/cluster.md).",
    )
    parser.add_argument("recipe", help="recipe name (e.g. d5_224) or YAML path, as for `volo train`")
    parser.add_argument("--out", type=Path, required=True, help="run folder on shared storage (absolute)")
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset root on shared storage (absolute)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument(
        "--nodes", type=int, default=DEFAULTS.nodes, help=f"nodes to allocate (default {DEFAULTS.nodes})"
    )
    parser.add_argument("--gpus-per-node", type=int, default=DEFAULTS.gpus_per_node, help="0 for a CPU-only (gloo) job")
    parser.add_argument("--procs-per-node", type=int, default=None, help="ranks per node (default: GPUs per node)")
    parser.add_argument("--launcher", choices=["torchrun", "srun"], default=DEFAULTS.launcher,
                        help="torchrun per node (c10d rendezvous) or one srun task per rank")  # fmt: skip
    parser.add_argument("--job-name", default=None, help="default: volo-RECIPE")
    parser.add_argument("--partition", default=None, help="#SBATCH --partition (default: the cluster's)")
    parser.add_argument("--account", default=None, help="#SBATCH --account to charge")
    parser.add_argument("--qos", default=None, help="#SBATCH --qos (quality of service)")
    parser.add_argument("--time", default=DEFAULTS.time, help="time limit per allocation, e.g. 04:00:00")
    parser.add_argument("--cpus-per-node", type=int, default=None, help="CPUs per node, split over its tasks")
    parser.add_argument("--mem", default=DEFAULTS.mem, help="memory per node ('0' = all; 'none' to omit)")
    parser.add_argument("--no-exclusive", action="store_true", help="share nodes with other jobs")
    parser.add_argument("--container-image", default=None, help="pyxis image (squashfs or docker URI)")
    parser.add_argument("--container-mounts", default="", help="SRC:DST[,SRC:DST...]; data/out added")
    parser.add_argument("--container-in-sbatch", action="store_true", help="also put container flags on #SBATCH")
    parser.add_argument(
        "--signal-lead", type=int, default=DEFAULTS.signal_lead_s, help="seconds of warning before the time limit"
    )
    parser.add_argument(
        "--max-requeues", type=int, default=DEFAULTS.max_requeues, help="requeues after a time-limit signal"
    )
    parser.add_argument(
        "--rdzv-port", type=int, default=DEFAULTS.rdzv_port, help="MASTER_PORT: rendezvous port on the first node"
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=DEFAULTS.shutdown_timeout_s,
        help="torchrun: seconds to checkpoint on signal",
    )
    parser.add_argument("--no-bind", action="store_true", help="do not wrap ranks in `volo bind`")
    parser.add_argument("--bind-map", type=Path, default=None, help="binding map file for `volo bind --map`")
    parser.add_argument("--volo", default=DEFAULTS.volo, help="the volo executable on the nodes")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE exported for the ranks")
    parser.add_argument("--sbatch", dest="extra_sbatch", action="append", default=[], help="extra sbatch option")
    parser.add_argument("--script", type=Path, default=None, help="where to write it (default OUT/job.sbatch)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print the script, write nothing")
    action.add_argument("--submit", action="store_true", help="write the script and submit it with sbatch")
    parser.set_defaults(func=run)


def job_from_args(args: argparse.Namespace) -> SlurmJob:
    """The SlurmJob the flags describe."""
    env = dict(DEFAULTS.env)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VoloError(f"--env {item!r} must look like KEY=VALUE.")
        env[key] = value
    return SlurmJob(
        recipe=args.recipe,
        out_dir=args.out,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        procs_per_node=args.procs_per_node,
        launcher=args.launcher,
        job_name=args.job_name or f"volo-{Path(args.recipe).stem}",
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time=args.time,
        cpus_per_node=args.cpus_per_node,
        mem=None if args.mem.lower() == "none" else args.mem,
        exclusive=not args.no_exclusive,
        data_dir=args.data_dir,
        overrides=tuple(args.overrides),
        container_image=args.container_image,
        container_mounts=tuple(m for m in args.container_mounts.split(",") if m),
        container_in_sbatch=args.container_in_sbatch,
        signal_lead_s=args.signal_lead,
        max_requeues=args.max_requeues,
        rdzv_port=args.rdzv_port,
        shutdown_timeout_s=args.shutdown_timeout,
        bind=not args.no_bind,
        bind_map=args.bind_map,
        volo=args.volo,
        env=env,
        extra_sbatch=tuple(args.extra_sbatch),
    )


def run(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    script = render_sbatch(job)
    if args.dry_run:
        print(script, end="")
        return 0
    path = args.script or job.out_dir / "job.sbatch"
    job.out_dir.mkdir(parents=True, exist_ok=True)  # Slurm opens the log there before the script runs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    print(f"wrote {path}")
    if args.submit:
        print(f"submitted job {submit(path)}; log: {job.out_dir}/slurm-<jobid>.out")
    return 0
