"""`volo slurm`: write (and with --submit, submit) the sbatch script for a multi-node training run.

    volo slurm d5_224 --nodes 5 --gpus-per-node 8 --partition batch --account proj --time 04:00:00 \\
        --data-dir /lustre/imagenet --out /lustre/runs --name d5-main \\
        --container-image nvcr.io#nvidia/pytorch:25.01-py3 --container-mounts /lustre:/lustre --dry-run

The recipe and every --set are checked exactly as `volo train` checks them, before a script is written.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

from volo.distributed.slurm import (
    DEFAULT_MAX_REQUEUES,
    SlurmJob,
    parse_slurm_time,
    render_sbatch,
    requeue_budget,
    submit,
)
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
    parser.add_argument("--out", type=Path, required=True, help="folder for run folders on shared storage (absolute)")
    parser.add_argument(
        "--name", default=None, help="run folder OUT/NAME (default RECIPE-<UTC time>-<random>: one per job)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset root on shared storage (absolute)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument(
        "--nodes", type=int, default=DEFAULTS.nodes, help=f"nodes to allocate (default {DEFAULTS.nodes})"
    )
    parser.add_argument("--gpus-per-node", type=int, default=DEFAULTS.gpus_per_node, help="0 for a CPU-only (gloo) job")
    parser.add_argument("--procs-per-node", type=int, default=None, help="ranks per node (default: GPUs per node)")
    parser.add_argument("--launcher", choices=["torchrun", "srun"], default=DEFAULTS.launcher,
                        help="one srun task per rank (default) or torchrun per node (c10d rendezvous)")  # fmt: skip
    parser.add_argument("--job-name", default=None, help="default: volo-NAME")
    parser.add_argument("--partition", default=None, help="#SBATCH --partition (default: the cluster's)")
    parser.add_argument("--account", default=None, help="#SBATCH --account to charge")
    parser.add_argument("--qos", default=None, help="#SBATCH --qos (quality of service)")
    parser.add_argument("--time", default=DEFAULTS.time, help="time limit per allocation, e.g. 04:00:00")
    parser.add_argument("--cpus-per-node", type=int, default=None, help="CPUs per node, split over its tasks")
    parser.add_argument("--mem", default=DEFAULTS.mem, help="memory per node ('0' = all; 'none' to omit)")
    parser.add_argument("--no-exclusive", action="store_true", help="share nodes with other jobs")
    parser.add_argument("--container-image", default=None, help="pyxis image (squashfs or docker URI)")
    parser.add_argument("--container-mounts", default="", help="SRC:DST[:FLAGS] or PATH, comma-separated; paths "
                        "are translated through them, uncovered out/data/bind-map paths mounted as is")  # fmt: skip
    parser.add_argument("--container-name", default=None, help="pyxis container name (default volo-NAME)")
    parser.add_argument(
        "--signal-lead", type=int, default=DEFAULTS.signal_lead_s, help="seconds of warning before the time limit"
    )
    parser.add_argument("--max-requeues", type=int, default=None,
                        help="default: enough for the planned hours in --time allocations")  # fmt: skip
    parser.add_argument("--expected-hours", type=float, default=None,
                        help="training hours `volo plan` predicts (default: write-up estimate)")  # fmt: skip
    parser.add_argument("--rdzv-port", type=int, default=None, help="default: 20000 + job id %% 20000")
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=DEFAULTS.shutdown_timeout_s,
        help="torchrun: seconds to checkpoint on signal",
    )
    parser.add_argument("--exit-wait", type=int, default=DEFAULTS.exit_wait_s,
                        help="seconds the other ranks get after the first exits (srun --wait)")  # fmt: skip
    parser.add_argument("--no-bind", action="store_true", help="do not wrap ranks in `volo bind`")
    parser.add_argument("--bind-map", type=Path, default=None, help="binding map file for `volo bind --map`")
    parser.add_argument("--volo", default=DEFAULTS.volo, help="the volo executable on the nodes")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE exported for the ranks")
    parser.add_argument("--sbatch", dest="extra_sbatch", action="append", default=[], help="extra sbatch option")
    parser.add_argument("--script", type=Path, default=None, help="where to write it (default OUT/NAME/job.sbatch)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print the script, write nothing")
    action.add_argument("--submit", action="store_true", help="write the script and submit it with sbatch")
    parser.set_defaults(func=run)


def _checked_config(args: argparse.Namespace):
    """The run's config, checked as `volo train` checks it (same one-line errors, here at generation time)."""
    from volo.training.config import load_config

    sets = list(args.overrides) + ([f"data.path={args.data_dir}"] if args.data_dir else [])
    return load_config(args.recipe, sets)


def planned_hours(cfg, nodes: int, gpus_per_node: int) -> float | None:
    """Hours `volo plan`'s write-up preset predicts for this run (None for a CPU job: nothing to scale from)."""
    if gpus_per_node < 1:
        return None
    from volo.distributed.planner import Workload, count_params, predict, writeup_single_gpu_images_s
    from volo.training.schedule import total_epochs

    params = count_params(cfg.model.name)
    single = writeup_single_gpu_images_s(params, cfg.model.img_size)
    work = Workload(params, single, cfg.train.batch_size * cfg.train.accumulation, float(total_epochs(cfg.schedule)))
    return predict(work, nodes, gpus_per_node).hours


def job_from_args(args: argparse.Namespace) -> SlurmJob:
    """The SlurmJob the flags describe (the recipe and overrides validated, the requeue budget sized)."""
    env = dict(DEFAULTS.env)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VoloError(f"--env {item!r} must look like KEY=VALUE.")
        env[key] = value
    cfg = _checked_config(args)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = args.name or f"{Path(args.recipe).stem}-{stamp}-{secrets.token_hex(2)}"
    max_requeues, args.planned_hours = args.max_requeues, None
    if max_requeues is None:
        hours = args.expected_hours or planned_hours(cfg, args.nodes, args.gpus_per_node)
        args.planned_hours = hours
        limit = parse_slurm_time(args.time)
        max_requeues = requeue_budget(hours, limit, args.signal_lead) if hours else DEFAULT_MAX_REQUEUES
    recipe = str(Path(args.recipe).resolve()) if Path(args.recipe).suffix in (".yaml", ".yml") else args.recipe
    return SlurmJob(
        recipe=recipe,
        out_dir=args.out,
        name=name,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        procs_per_node=args.procs_per_node,
        launcher=args.launcher,
        job_name=args.job_name or f"volo-{name}",
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
        container_name=args.container_name,
        signal_lead_s=args.signal_lead,
        max_requeues=max_requeues,
        rdzv_port=args.rdzv_port,
        shutdown_timeout_s=args.shutdown_timeout,
        exit_wait_s=args.exit_wait,
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
    path = args.script or job.run_dir / "job.sbatch"
    job.run_dir.mkdir(parents=True, exist_ok=True)  # Slurm opens the log there before the script runs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    print(f"wrote {path}")
    planned = f" for ~{args.planned_hours:.0f} h of training" if args.planned_hours else ""
    print(f"run folder {job.run_dir}; requeue budget {job.max_requeues}{planned} in {job.time} allocations")
    if args.submit:
        print(f"submitted job {submit(path)}; log: {job.run_dir}/slurm-<jobid>.out")
        sys.stdout.flush()
    return 0
