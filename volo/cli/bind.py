"""`volo bind`: show the per-rank CPU/memory/HCA binding, or run a command under it.

volo bind --print                          # the plan for every local rank of this machine, as a table
volo bind --print --json                   # the same, machine-readable
volo bind --numactl --local-rank 3         # the numactl prefix for local rank 3
volo bind -- volo train ...                # bind this rank (LOCAL_RANK / SLURM_LOCALID) and exec the command
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from volo.distributed.binding import (
    BindingPlan,
    CoreSlicing,
    RankBinding,
    apply_binding,
    compute_binding_plan,
    visible_gpus_from_env,
)
from volo.distributed.binding_map import apply_binding_map, load_binding_map
from volo.distributed.cpulist import format_cpulist
from volo.distributed.topology import read_topology
from volo.errors import VoloError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bind",
        help="bind ranks to the CPU cores, memory and InfiniBand HCA nearest their GPU",
        description="Derive each local rank's CPU cores, NUMA memory node and HCA from sysfs/NVML, print the plan, "
        "or exec a command bound to it (numactl when installed, else CPU affinity only).",
    )
    parser.add_argument("--print", dest="print_plan", action="store_true", help="print the plan for all local ranks")
    parser.add_argument("--json", action="store_true", help="with --print: JSON instead of a table")
    parser.add_argument("--numactl", action="store_true", help="print the numactl prefix for --local-rank")
    parser.add_argument("--local-rank", type=int, default=None, help="default: $LOCAL_RANK, $SLURM_LOCALID or 0")
    parser.add_argument("--nproc", type=int, default=None, help="ranks on this node (default: one per visible GPU)")
    parser.add_argument(
        "--mode",
        choices=[m.value for m in CoreSlicing],
        default=CoreSlicing.UNIQUE_CONTIGUOUS.value,
        help="how GPUs sharing a NUMA node share its cores",
    )
    parser.add_argument("--map", type=Path, default=None, help="YAML/JSON override: per local rank cores/mem_node/hca")
    parser.add_argument("--sysfs-root", type=Path, default=Path("/"), help="read <root>/sys (tests use fake trees)")
    parser.add_argument("--no-nvml", action="store_true", help="list GPUs from sysfs even when pynvml is installed")
    parser.add_argument(
        "exec_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="a command to exec under the binding"
    )
    parser.set_defaults(func=run)


def build_plan(args: argparse.Namespace) -> BindingPlan:
    """The plan for this machine from the parsed flags (shared with launch scripts' `volo bind -- ...`)."""
    topology = read_topology(args.sysfs_root, use_nvml=not args.no_nvml)
    on_this_machine = Path(args.sysfs_root).resolve() == Path("/")
    nproc = args.nproc
    if nproc is None and on_this_machine and os.environ.get("LOCAL_WORLD_SIZE", "").isdigit():
        nproc = int(os.environ["LOCAL_WORLD_SIZE"])  # set by torchrun for its workers
    plan = compute_binding_plan(
        topology,
        nproc=nproc,
        visible_gpus=visible_gpus_from_env(os.environ) if on_this_machine else None,
        allowed_cpus=os.sched_getaffinity(0) if on_this_machine else None,
        mode=CoreSlicing(args.mode),
    )
    if args.map is not None:
        plan = apply_binding_map(plan, load_binding_map(args.map), args.map, topology)
    return plan


def format_plan(plan: BindingPlan) -> str:
    """The plan as a text table, one row per local rank, notes below."""
    header = ("rank", "gpu", "gpu node", "cpus", "cores", "mem node", "nearest HCA", "source")
    rows = [header]
    for r in plan.ranks:
        rows.append(
            (
                str(r.local_rank),
                "-" if r.gpu is None else str(r.gpu),
                "-" if r.gpu_numa_node is None else str(r.gpu_numa_node),
                format_cpulist(r.cpus),
                str(r.physical_cores),
                "-" if r.mem_node is None else str(r.mem_node),
                f"{r.hca}:{r.hca_port}" if r.hca else "-",
                r.source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    hcas = {r.env().get("NCCL_IB_HCA") for r in plan.ranks} - {None}
    lines += [f"NCCL_IB_HCA (every rank): {h}" for h in sorted(hcas)]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def plan_as_json(plan: BindingPlan) -> str:
    """The plan as JSON: ranks with cpulist strings, env and numactl prefix, plus notes."""
    ranks = [
        {
            "local_rank": r.local_rank,
            "gpu": r.gpu,
            "gpu_numa_node": r.gpu_numa_node,
            "cpus": format_cpulist(r.cpus),
            "physical_cores": r.physical_cores,
            "mem_node": r.mem_node,
            "hca": r.hca,
            "env": r.env(),
            "numactl": r.numactl_command(),
            "source": r.source,
        }
        for r in plan.ranks
    ]
    return json.dumps({"ranks": ranks, "notes": list(plan.notes)}, indent=2)


def local_rank_from_env(explicit: int | None) -> int:
    """--local-rank, else LOCAL_RANK (torchrun), else SLURM_LOCALID (srun), else 0."""
    if explicit is not None:
        return explicit
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def exec_bound(binding: RankBinding, command: list[str]) -> None:
    """Replace this process with `command` bound to `binding` (numactl for memory when installed)."""
    env = dict(os.environ)
    env.update(binding.env())
    numactl = shutil.which("numactl")
    if numactl and binding.mem_node is not None:
        argv = [numactl, *binding.numactl_command()[1:], *command]
    else:
        apply_binding(binding, env)
        if binding.mem_node is not None:
            print(f"volo bind: numactl not found, memory of local rank {binding.local_rank} not bound", file=sys.stderr)
        argv = command
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise VoloError(f"cannot run {argv[0]!r}: not found on PATH; check the command after `volo bind --`.") from None


def run(args: argparse.Namespace) -> int:
    command = list(args.exec_command)
    if command and command[0] == "--":
        command = command[1:]
    if not (args.print_plan or args.numactl or command):
        raise VoloError("volo bind needs --print, --numactl or a command after `--` (volo bind -- volo train ...).")
    plan = build_plan(args)
    if args.print_plan:
        print(plan_as_json(plan) if args.json else format_plan(plan))
        return 0
    binding = plan.for_local_rank(local_rank_from_env(args.local_rank))
    if args.numactl:
        print(" ".join(binding.numactl_command()))
        return 0
    exec_bound(binding, command)
    return 0  # not reached: exec replaced the process
