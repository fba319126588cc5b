"""Process-group setup from torchrun's environment, device choice, metric all-reduce helpers and teardown.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Without them (or WORLD_SIZE=1) the run is a
single process and no group is created. NCCL on CUDA, gloo on CPU, always with an explicit timeout (checkpoint
writing and evaluation count against it).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from volo.errors import VoloError

DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None
    """nccl, gloo, or None for a single process without a group."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise VoloError(f"Environment variable {name}={value!r} is not an integer; check the launcher.") from None


def select_device(local_rank: int, prefer: str = "auto") -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available (and not `prefer='cpu'`), else cpu."""
    if prefer == "cpu" or (prefer == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise VoloError("A CUDA device was requested but none is available; run with device 'cpu' or 'auto'.")
    if local_rank >= torch.cuda.device_count():
        raise VoloError(
            f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
            "launch at most one process per GPU (torchrun --nproc-per-node)."
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _addresses(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def check_master_is_rank0_host(env=os.environ) -> None:
    """Under Slurm without torchrun, rank 0 hosts the rendezvous store on its own node: MASTER_ADDR must name that
    node, or every other rank waits out the timeout for a store nobody serves. A VoloError right away instead.

    Checked only where the answer is certain: rank 0, SLURMD_NODENAME and MASTER_ADDR both resolve, and MASTER_ADDR
    is not a loopback address of a one-node job."""
    node, master = env.get("SLURMD_NODENAME"), env.get("MASTER_ADDR")
    if env.get("RANK") != "0" or not node or not master or "TORCHELASTIC_RUN_ID" in env:
        return
    mine, theirs = _addresses(node), _addresses(master)
    if not mine or not theirs or mine & theirs:
        return
    one_node = env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES")) == "1"
    if one_node and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in theirs):
        return
    raise VoloError(
        f"MASTER_ADDR={master} ({', '.join(sorted(theirs))}) is not the node of rank 0 ({node}, "
        f"{', '.join(sorted(mine))}), which hosts the rendezvous: set MASTER_ADDR to the first host of the allocation "
        '(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1), as `volo slurm` scripts do.'
    )


def init_distributed(prefer: str = "auto", timeout_s: float | None = None, init_method: str | None = None) -> DistInfo:
    """Join the job described by the environment (or return a single-process `DistInfo`)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    device = select_device(local_rank, prefer)
    if world <= 1:
        return DistInfo(0, 0, 1, device, None)
    if init_method is None and not ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ):
        raise VoloError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are unset; launch with torchrun.")
    if init_method is None:
        check_master_is_rank0_host()
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s or float(os.environ.get("VOLO_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if init_method is None and attempt is not None:
            # torchrun's agent keeps ONE store across restarts: without a per-attempt prefix a restarted rank can
            # read its peer's address left by the previous attempt (gloo: "connectFullMesh failed ... refused").
            store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
            store = dist.PrefixStore(f"volo/attempt{attempt}", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout, **kwargs)
        else:
            dist.init_process_group(
                backend, init_method=init_method or "env://", rank=rank, world_size=world, timeout=timeout, **kwargs
            )
    return DistInfo(rank, local_rank, world, device, backend)


def teardown(wait: bool = True) -> None:
    """Leave the process group (no-op for a single process); `wait=False` skips the barrier (after an error)."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 of the group, or a single process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place, returned); identity for a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (in place, returned)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Max over ranks (used for stop flags)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
