"""Per-rank binding plan: the CPU cores, memory node and InfiniBand HCA nearest each local rank's GPU.

Derived from the topology (sysfs/NVML), never from a formula such as `node = local_rank // gpus_per_node`, which
gets machines like the DGX A100 (GPUs on NUMA nodes 3, 1, 7, 5) wrong.

Rules:
- CPUs: the cores of the GPU's NUMA node that this process may use (os.sched_getaffinity, i.e. cgroups/Slurm).
  GPUs that share a node get unique slices of it (contiguous by default: neighbouring cores share an L3 on AMD
  Rome/Milan); SMT siblings always stay with their core. A GPU without NUMA information (numa_node -1, VMs) gets
  a slice of all allowed CPUs and no memory binding.
- Memory: the GPU's NUMA node.
- HCA: each rank's nearest active HCA by PCI distance (same PCIe switch first, then same root complex, then same
  NUMA node); GPUs with the same nearest set share it round-robin. Storage/management NICs hang off root ports
  without GPUs, so they are never nearest when compute HCAs exist. NCCL_IB_HCA is the SAME on every rank of a node:
  the node's compute HCAs (the union of the ranks' nearest ones), as NVIDIA's scripts set it; NCCL then picks the
  nearest one per GPU itself, and a list that differs between ranks breaks its ring/tree construction. No HCA:
  NCCL_IB_HCA is left unset.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from enum import Enum

from volo.distributed.cpulist import format_cpulist
from volo.distributed.topology import GpuDevice, InfinibandHca, Topology
from volo.errors import VoloError


class CoreSlicing(str, Enum):
    """How GPUs that share a NUMA node share its cores (the modes of NVIDIA's gpu_affinity)."""

    NODE = "node"
    """Every GPU gets all cores of its node."""
    UNIQUE_CONTIGUOUS = "unique_contiguous"
    """Each GPU gets its own run of consecutive cores (default)."""
    UNIQUE_INTERLEAVED = "unique_interleaved"
    """Each GPU gets every k-th core of the node."""


@dataclass(frozen=True)
class RankBinding:
    """Where one local rank runs."""

    local_rank: int
    gpu: int | None
    """GPU index on this machine, None for a CPU-only rank."""
    gpu_numa_node: int | None
    cpus: tuple[int, ...]
    """Logical CPUs, SMT siblings included."""
    mem_node: int | None
    """NUMA node to allocate memory on; None leaves memory policy alone."""
    hca: str | None
    """The HCA nearest this rank's GPU (shown by `volo bind --print`); None when there is none."""
    hca_port: int = 1
    node_hcas: tuple[str, ...] = ()
    """The node's compute HCAs as NAME:PORT, the same on every rank: NCCL_IB_HCA (empty: left unset)."""
    physical_cores: int = 0
    """Cores in `cpus` counting an SMT sibling group once (used for OMP_NUM_THREADS)."""
    source: str = "topology"
    """"topology" or "map-file"."""

    def env(self) -> dict[str, str]:
        """Environment for the rank: NCCL_IB_HCA = the node's HCA list (a leading `=`: exact names, so mlx5_1 never
        matches mlx5_10), OMP_NUM_THREADS."""
        env = {"OMP_NUM_THREADS": str(max(1, self.physical_cores or len(self.cpus)))}
        if self.node_hcas:
            env["NCCL_IB_HCA"] = "=" + ",".join(self.node_hcas)
        return env

    def numactl_command(self) -> list[str]:
        """`numactl --physcpubind=... [--membind=N]`, to put in front of the rank's command."""
        command = ["numactl", f"--physcpubind={format_cpulist(self.cpus)}"]
        if self.mem_node is not None:
            command.append(f"--membind={self.mem_node}")
        return command


@dataclass(frozen=True)
class BindingPlan:
    """One binding per local rank plus notes about what could not be derived (no NUMA info, no IB)."""

    ranks: tuple[RankBinding, ...]
    notes: tuple[str, ...] = ()

    def for_local_rank(self, local_rank: int) -> RankBinding:
        """The binding of `local_rank`; a VoloError when the plan has no such rank."""
        for rank in self.ranks:
            if rank.local_rank == local_rank:
                return rank
        raise VoloError(
            f"the binding plan has local ranks 0..{len(self.ranks) - 1} but local rank {local_rank} was asked for; "
            "start as many ranks per node as there are GPUs, or pass --nproc."
        )


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def with_node_hcas(ranks: Iterable[RankBinding]) -> tuple[RankBinding, ...]:
    """Every rank with the same `node_hcas`: the union of the ranks' HCAs (NAME:PORT, natural order)."""
    ranks = tuple(ranks)
    names = sorted({f"{r.hca}:{r.hca_port}" for r in ranks if r.hca}, key=_natural)
    return tuple(dataclasses.replace(r, node_hcas=tuple(names)) for r in ranks)


def core_groups(pool: Iterable[int], topology: Topology) -> list[tuple[int, ...]]:
    """Split CPUs into SMT sibling groups (restricted to the pool), ordered by their first CPU."""
    pool_set = set(pool)
    groups = {tuple(c for c in topology.siblings_of(cpu) if c in pool_set) or (cpu,) for cpu in pool_set}
    return sorted(groups, key=lambda group: group[0])


def _slice(groups: list[tuple[int, ...]], count: int, mode: CoreSlicing) -> list[list[tuple[int, ...]]]:
    """Give each of `count` GPUs its share of the core groups."""
    if mode is CoreSlicing.NODE or count == 1:
        return [groups] * count
    if len(groups) < count:  # fewer cores than GPUs: GPUs share cores round-robin
        return [[groups[i % len(groups)]] for i in range(count)]
    if mode is CoreSlicing.UNIQUE_INTERLEAVED:
        return [groups[i::count][: len(groups) // count] for i in range(count)]
    per_gpu = len(groups) // count
    return [groups[i * per_gpu : (i + 1) * per_gpu] for i in range(count)]


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def pci_distance(gpu: GpuDevice, hca: InfinibandHca) -> tuple[int, int]:
    """Sort key for HCA nearness: (0, hops) on the same root complex, else (1, 0 same NUMA node / 1 other)."""
    common = _common_prefix(gpu.pci_path, hca.pci_path)
    if common >= 1:
        return (0, len(gpu.pci_path) + len(hca.pci_path) - 2 * common)
    same_node = gpu.numa_node is not None and gpu.numa_node == hca.numa_node
    return (1, 0 if same_node else 1)


def _choose_hcas(gpus: Sequence[GpuDevice], hcas: Sequence[InfinibandHca]) -> list[InfinibandHca | None]:
    """The nearest HCA per GPU; GPUs with the same nearest set take its members in turn."""
    if not hcas:
        return [None] * len(gpus)
    chosen: list[InfinibandHca | None] = []
    turns: dict[tuple[str, ...], int] = {}
    for gpu in gpus:
        best = min(pci_distance(gpu, hca) for hca in hcas)
        nearest = [hca for hca in hcas if pci_distance(gpu, hca) == best]
        key = tuple(hca.name for hca in nearest)
        turn = turns.get(key, 0)
        turns[key] = turn + 1
        chosen.append(nearest[turn % len(nearest)])
    return chosen


def compute_binding_plan(
    topology: Topology,
    *,
    nproc: int | None = None,
    visible_gpus: Sequence[int] | None = None,
    allowed_cpus: Iterable[int] | None = None,
    mode: CoreSlicing = CoreSlicing.UNIQUE_CONTIGUOUS,
) -> BindingPlan:
    """Plan the binding of `nproc` local ranks (default: one per visible GPU).

    `visible_gpus` are the topology GPU indices local ranks 0, 1, ... use (CUDA_VISIBLE_DEVICES); `allowed_cpus`
    the CPUs this process may run on (os.sched_getaffinity(0)); None means all online CPUs.
    """
    notes: list[str] = []
    by_index = {gpu.index: gpu for gpu in topology.gpus}
    if visible_gpus is None:
        gpus = list(topology.gpus)
    else:
        missing = [i for i in visible_gpus if i not in by_index]
        if missing:
            raise VoloError(
                f"CUDA_VISIBLE_DEVICES names GPU {missing[0]} but this machine has GPUs "
                f"{sorted(by_index) or 'none'}; fix CUDA_VISIBLE_DEVICES or use a map file (--map)."
            )
        gpus = [by_index[i] for i in visible_gpus]
    if nproc is None:
        nproc = len(gpus) or 1
    if gpus and nproc > len(gpus):
        raise VoloError(
            f"{nproc} ranks per node were asked for but only {len(gpus)} GPUs are visible; "
            f"pass --nproc {len(gpus)} or fewer (or use a map file with --map)."
        )
    allowed = set(allowed_cpus) if allowed_cpus is not None else set(topology.online_cpus)
    if not allowed:
        raise VoloError("no CPU is allowed for this process (os.sched_getaffinity is empty); check the cgroup.")

    if not gpus:
        notes.append("no NVIDIA GPU found: CPU-only ranks get unique slices of the allowed CPUs, memory not bound.")
        slices = _slice(core_groups(allowed, topology), nproc, CoreSlicing.UNIQUE_CONTIGUOUS)
        ranks = tuple(
            RankBinding(
                local_rank=i,
                gpu=None,
                gpu_numa_node=None,
                cpus=tuple(sorted(c for g in groups for c in g)),
                mem_node=None,
                hca=None,
                physical_cores=len(groups),
            )
            for i, groups in enumerate(slices)
        )
        return BindingPlan(ranks=ranks, notes=tuple(notes))

    gpus = gpus[:nproc]
    # Group local ranks by their GPU's NUMA node (None: unknown) and slice each node's allowed cores among them.
    members: dict[int | None, list[int]] = {}
    for local_rank, gpu in enumerate(gpus):
        members.setdefault(gpu.numa_node, []).append(local_rank)
    cores_of: dict[int, list[tuple[int, ...]]] = {}
    for node_id, local_ranks in members.items():
        node = topology.node(node_id) if node_id is not None else None
        if node_id is None:
            notes.append(
                "GPU(s) " + ", ".join(str(gpus[r].index) for r in local_ranks) + " report no NUMA node "
                "(numa_node -1, typical of VMs): bound to slices of all allowed CPUs, memory not bound."
            )
            pool = allowed
        elif node is None or not (set(node.cpus) & allowed):
            notes.append(
                f"NUMA node {node_id} has no CPU this process may use: its GPUs get slices of all allowed CPUs."
            )
            pool = allowed
        else:
            pool = set(node.cpus) & allowed
        for local_rank, groups in zip(local_ranks, _slice(core_groups(pool, topology), len(local_ranks), mode)):
            cores_of[local_rank] = groups

    hcas = _choose_hcas(gpus, topology.hcas)
    if not topology.hcas:
        notes.append("no active InfiniBand/RoCE HCA found: NCCL_IB_HCA left unset (NCCL picks its transport).")
    ranks = []
    for local_rank, (gpu, hca) in enumerate(zip(gpus, hcas)):
        groups = cores_of[local_rank]
        ranks.append(
            RankBinding(
                local_rank=local_rank,
                gpu=gpu.index,
                gpu_numa_node=gpu.numa_node,
                cpus=tuple(sorted(c for g in groups for c in g)),
                mem_node=gpu.numa_node,
                hca=hca.name if hca else None,
                hca_port=hca.ports[0] if hca else 1,
                physical_cores=len(groups),
            )
        )
    return BindingPlan(ranks=with_node_hcas(ranks), notes=tuple(notes))


def visible_gpus_from_env(env: Mapping[str, str]) -> list[int] | None:
    """GPU indices from CUDA_VISIBLE_DEVICES ("0,1,2"), None when unset; a VoloError for UUID forms."""
    text = env.get("CUDA_VISIBLE_DEVICES")
    if text is None or text.strip() == "":
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise VoloError(
            f"CUDA_VISIBLE_DEVICES={text!r} uses GPU UUIDs or MIG names, which binding cannot map to PCI devices; "
            "use indices (CUDA_VISIBLE_DEVICES=0,1) or give the binding in a map file (--map)."
        ) from None


def apply_binding(
    binding: RankBinding,
    env: MutableMapping[str, str] | None = None,
    *,
    set_affinity: Callable[[int, set[int]], None] = os.sched_setaffinity,
) -> dict[str, str]:
    """Bind the calling process (CPU affinity) and set the rank's environment; returns the variables set.

    Call it before the CUDA context exists: threads created later inherit the affinity. Memory binding needs
    numactl (`numactl_command`) or libnuma; this function only sets CPU affinity.
    """
    env = os.environ if env is None else env
    set_affinity(0, set(binding.cpus))
    changes = binding.env()
    env.update(changes)
    return changes
