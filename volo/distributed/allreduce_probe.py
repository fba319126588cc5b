"""A small all-reduce probe: measured bus bandwidth, latency and straggler spread for `volo plan`.

Run it where the training will run, with the launcher the training will use (NCCL on GPUs, gloo on CPUs):

    torchrun --nnodes 2 --nproc-per-node 8 ... -m volo.distributed.allreduce_probe --json probe.json
    srun --ntasks-per-node 8 bash -c 'RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS \\
        python -m volo.distributed.allreduce_probe --json probe.json'
    volo plan --model volo_d5 --node-images-s 500 --probe-json probe.json --nodes 1,5

Messages: 64 KiB, 1 MiB, one 25 MiB DDP bucket and the fp32 gradients of VOLO-D1..D5 (`--scale` shrinks them all,
e.g. for a CPU test). Each size is all-reduced `--iters` times after `--warmup`; its time is the slowest rank's
median. Bus bandwidth, as NCCL's all_reduce_perf reports it: busbw = 2 (n-1)/n x bytes / seconds. A least-squares
fit `seconds = latency + 2 (n-1)/n x bytes / busbw` over all sizes gives the two terms the planner uses.
Stragglers: every rank times the same fixed matmul `--iters` times; the spread of those times across ranks (their
coefficient of variation) is the planner's straggler term (the slowest of n ranks is ~cv x sqrt(2 ln n) late).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from volo.distributed.process_group import init_distributed, teardown

SMALL_SIZES = {"64KiB": 64 * 1024, "1MiB": 1024 * 1024, "bucket25MiB": 25 * 1024 * 1024}
VARIANTS = ("volo_d1", "volo_d2", "volo_d3", "volo_d4", "volo_d5")


def message_sizes(scale: float = 1.0) -> dict[str, int]:
    """Label -> bytes: the small sizes and the fp32 gradients of D1..D5, all times `scale` (at least 4 bytes)."""
    from volo.distributed.planner import count_params

    sizes = dict(SMALL_SIZES)
    sizes.update({f"{v}_grads": count_params(v) * 4 for v in VARIANTS})
    return {label: max(4, int(size * scale) // 4 * 4) for label, size in sizes.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _slowest_median(times: list[float], device: torch.device) -> float:
    value = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def time_allreduce(nbytes: int, iters: int, warmup: int, device: torch.device) -> float:
    """Seconds of one all-reduce of `nbytes` (fp32), the slowest rank's median over `iters`."""
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    times = []
    for i in range(warmup + iters):
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return _slowest_median(times, device)


def straggler_cv(iters: int, device: torch.device, dim: int = 256) -> float:
    """Coefficient of variation of one fixed compute step's time across ranks and iterations."""
    a = torch.randn(dim, dim, device=device)
    times = []
    for _ in range(iters):
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(8):
            a = torch.tanh(a @ a / dim)
        _sync(device)
        times.append(time.perf_counter() - t0)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, times)
    pooled = [t for rank in gathered for t in rank]
    return statistics.pstdev(pooled) / statistics.fmean(pooled)


def fit_latency_bandwidth(rows: list[dict], n: int) -> tuple[float, float]:
    """Least squares of seconds = latency + x / busbw with x = 2 (n-1)/n x bytes; returns (latency s, busbw GB/s)."""
    xs = [2 * (n - 1) / n * r["bytes"] for r in rows]
    ys = [r["seconds"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    latency = max(0.0, my - slope * mx)
    return latency, (1.0 / slope / 1e9) if slope > 0 else float("inf")


def probe(scale: float = 1.0, iters: int = 5, warmup: int = 2) -> dict:
    """Run the probe in an initialised process group; every rank returns the same result dict."""
    n = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    rows = []
    for label, nbytes in message_sizes(scale).items():
        seconds = time_allreduce(nbytes, iters, warmup, device)
        busbw = 2 * (n - 1) / n * nbytes / seconds / 1e9
        rows.append({"label": label, "bytes": nbytes, "seconds": seconds, "algbw_gbs": nbytes / seconds / 1e9,
                     "busbw_gbs": busbw})  # fmt: skip
    latency, busbw = fit_latency_bandwidth(rows, n)
    hosts = [None] * n
    dist.all_gather_object(hosts, os.environ.get("SLURMD_NODENAME") or os.uname().nodename)
    return {
        "world_size": n,
        "nodes": len(set(hosts)),
        "backend": dist.get_backend(),
        "rows": rows,
        "fit": {"latency_s": latency, "busbw_gbs": busbw},
        "straggler_cv": straggler_cv(iters, device),
    }


def format_result(result: dict) -> str:
    lines = [
        f"all-reduce probe: {result['world_size']} ranks on {result['nodes']} node(s), {result['backend']}",
        f"{'message':>16} {'MB':>9} {'ms':>9} {'algbw GB/s':>11} {'busbw GB/s':>11}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['label']:>16} {r['bytes'] / 1e6:>9.2f} {r['seconds'] * 1e3:>9.3f} {r['algbw_gbs']:>11.3f} "
            f"{r['busbw_gbs']:>11.3f}"
        )
    fit = result["fit"]
    lines.append(
        f"fit: latency {fit['latency_s'] * 1e6:.1f} us per all-reduce, bus bandwidth {fit['busbw_gbs']:.3f} GB/s; "
        f"straggler cv {result['straggler_cv']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volo.distributed.allreduce_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message size (e.g. 0.001 on CPU)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="rank 0 writes the result here (for volo plan)")
    args = parser.parse_args(argv)
    info = init_distributed()
    if not info.distributed:
        print("allreduce_probe: one process only; launch it with torchrun or srun on 2+ ranks", flush=True)
        return 2
    try:
        result = probe(args.scale, args.iters, args.warmup)
        if info.is_main:
            print(format_result(result), flush=True)
            if args.json is not None:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
