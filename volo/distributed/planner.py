"""Scaling planner: from one GPU's measured throughput to images/s, efficiency and time-to-train on N x G GPUs.

The model (every constant is a field of `CommModel`, see docs/cluster.md for the reasoning):

    compute time per step        T_c    = b / t1                       (b images per GPU, t1 images/s on one GPU)
    gradient bytes               S      = parameters x bytes per gradient element (4: fp32 DDP buckets)
    ring all-reduce              T_ar   = 2 (n - 1) / n x S / B        (n = N x G GPUs)
        B = NVLink bus bandwidth on one node, min(NVLink, inter-node bus bandwidth) across nodes
    hidden behind backward       T_hid  = min(overlap x T_ar, backward_fraction x T_c)
    step                         T_step = T_c + T_ar - T_hid
    throughput                   n x b / T_step;   efficiency = throughput / (n x t1)
    time-to-train                epochs x dataset images / throughput;   GPU-hours = hours x n

    with latency and stragglers (n > 1):
        T_ar += ceil(S / bucket) x 2 (n - 1) x hop latency;     T_c *= 1 + cv x sqrt(2 ln n)

Two sources for the network terms:
- the write-up preset (`CommModel()`): an effective inter-node bandwidth of 8.3 GB/s, not the wire speed of 8 x HDR,
  but the figure that reproduces the write-up (VOLO-D5: ~500 images/s on one DGX A100, ~2,100 on five), which
  `calibrate` solves for. Circular for the 5-node figure by construction; kept as a documented preset.
- measured (`comm_from_probe`): bus bandwidth, latency and straggler spread from `volo.distributed.allreduce_probe`
  run on the cluster itself, with a measured single-node images/s (`volo bench`, or a run's metrics/steps.jsonl).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from volo.errors import VoloError

# The NVIDIA write-up's VOLO-D5 pretraining figures (224 px, 8 GPUs x 44 images per node, ImageNet-1k).
WRITEUP_PER_GPU_BATCH = 44
WRITEUP_NODE_IMAGES_S = 500.0
"""VOLO-D5 at 224 px on one DGX A100 (8 GPUs x 44 images), the write-up's measured figure."""
D5_PARAMS = 295_455_584
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass(frozen=True)
class CommModel:
    """Communication assumptions; defaults describe a DGX A100 cluster as the write-up measured it."""

    nvlink_gbytes_s: float = 230.0
    """All-reduce bus bandwidth inside a node, GB/s (NCCL all_reduce_perf on DGX A100 NVSwitch: ~230)."""
    inter_node_gbytes_s: float = 8.3
    """Effective all-reduce bus bandwidth across nodes, GB/s; calibrated to the write-up (peak 8 x HDR is 200)."""
    overlap: float = 0.5
    """Fraction of the all-reduce DDP hides behind backward (bucketed overlap; the last buckets are exposed)."""
    backward_fraction: float = 2.0 / 3.0
    """Share of a step's compute spent in backward, the only time communication can hide in."""
    bytes_per_grad: int = 4
    """Bytes per gradient element all-reduced (4: fp32 grads, also under AMP; 2 with a bf16 compression hook)."""
    hop_latency_s: float = 0.0
    """Latency per ring hop per all-reduce message (a ring all-reduce makes 2 (n-1) hops); 0 in the write-up preset,
    measured by the probe (volo.distributed.allreduce_probe)."""
    bucket_bytes: int = 25 * 1024 * 1024
    """DDP bucket size: the gradients go out as ceil(S / bucket) all-reduce messages, each paying the latency."""
    straggler_cv: float = 0.0
    """Spread (coefficient of variation) of one step's compute time across ranks: every step waits for the slowest
    of n ranks, ~cv x sqrt(2 ln n) behind the mean. 0 in the write-up preset; measured by the probe."""


@dataclass(frozen=True)
class Workload:
    """What is trained and how long."""

    params: int
    """Trainable parameters (VOLO-D5: 295.5 M)."""
    single_gpu_images_s: float
    """Measured training images/s of one GPU at `per_gpu_batch`."""
    per_gpu_batch: int = WRITEUP_PER_GPU_BATCH
    epochs: float = 300.0
    dataset_images: int = IMAGENET_TRAIN_IMAGES


@dataclass(frozen=True)
class ScalePrediction:
    """The prediction for one cluster shape."""

    nodes: int
    gpus_per_node: int
    images_s: float
    efficiency: float
    """images_s / (GPUs x single-GPU images/s)."""
    step_s: float
    compute_s: float
    allreduce_s: float
    exposed_comm_s: float
    hours: float
    gpu_hours: float

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def predict(workload: Workload, nodes: int, gpus_per_node: int, comm: CommModel = CommModel()) -> ScalePrediction:
    """Predict throughput and time-to-train of `workload` on `nodes` x `gpus_per_node` GPUs."""
    if nodes < 1 or gpus_per_node < 1:
        raise VoloError(f"--nodes and --gpus-per-node must be at least 1, got {nodes} x {gpus_per_node}.")
    if workload.single_gpu_images_s <= 0:
        raise VoloError("the single-GPU throughput must be positive; pass --images-s or a benchmark --bench-json.")
    n = nodes * gpus_per_node
    compute_s = workload.per_gpu_batch / workload.single_gpu_images_s
    bandwidth = comm.nvlink_gbytes_s if nodes == 1 else min(comm.nvlink_gbytes_s, comm.inter_node_gbytes_s)
    grad_bytes = workload.params * comm.bytes_per_grad
    allreduce_s = ring_allreduce_s(n, grad_bytes, bandwidth)
    if n > 1:  # latency: every bucket's ring makes 2 (n-1) hops; stragglers: the step waits for the slowest rank
        allreduce_s += math.ceil(grad_bytes / comm.bucket_bytes) * 2 * (n - 1) * comm.hop_latency_s
        compute_s *= 1 + comm.straggler_cv * math.sqrt(2 * math.log(n))
    hidden_s = min(comm.overlap * allreduce_s, comm.backward_fraction * compute_s)
    step_s = compute_s + allreduce_s - hidden_s
    images_s = n * workload.per_gpu_batch / step_s
    hours = workload.epochs * workload.dataset_images / images_s / 3600
    return ScalePrediction(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        images_s=images_s,
        efficiency=images_s / (n * workload.single_gpu_images_s),
        step_s=step_s,
        compute_s=compute_s,
        allreduce_s=allreduce_s,
        exposed_comm_s=allreduce_s - hidden_s,
        hours=hours,
        gpu_hours=hours * n,
    )


def ring_allreduce_s(n: int, grad_bytes: float, gbytes_s: float) -> float:
    """Seconds of a ring all-reduce of `grad_bytes` over `n` ranks at `gbytes_s` GB/s per link (2(n-1)/n passes)."""
    return 2 * (n - 1) / n * grad_bytes / (gbytes_s * 1e9) if n > 1 else 0.0


def single_gpu_from_node(
    node_images_s: float, params: int, gpus_per_node: int, per_gpu_batch: int, comm: CommModel = CommModel()
) -> float:
    """Invert the one-node model: the single-GPU images/s that gives `node_images_s` on one node (bisection on
    `predict`, so every term of the model, overlap cap, latency and stragglers included, is inverted alike)."""
    if node_images_s <= 0:
        raise VoloError(f"the measured node throughput must be positive, got {node_images_s}.")

    def node_rate(single: float) -> float:
        return predict(Workload(params, single, per_gpu_batch), 1, gpus_per_node, comm).images_s

    low, high = node_images_s / gpus_per_node, node_images_s / gpus_per_node * 2
    while node_rate(high) < node_images_s:
        high *= 2
        if high > 1e4 * node_images_s:
            raise VoloError(
                f"{node_images_s:g} img/s on one node is more than its all-reduce allows with this bandwidth and "
                "latency (the communication alone takes longer); check --node-images-s and --probe-json."
            )
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if node_rate(mid) < node_images_s else (low, mid)
    return (low + high) / 2


def calibrate(
    params: int,
    one_node_images_s: float,
    many_nodes_images_s: float,
    nodes: int,
    gpus_per_node: int = 8,
    per_gpu_batch: int = WRITEUP_PER_GPU_BATCH,
    comm: CommModel = CommModel(),
) -> tuple[float, CommModel]:
    """Fit the single-GPU images/s and the effective inter-node bandwidth to two measured cluster throughputs.

    Returns (single-GPU images/s, `comm` with inter_node_gbytes_s replaced). Overlap and NVLink stay as given.
    """
    single = single_gpu_from_node(one_node_images_s, params, gpus_per_node, per_gpu_batch, comm)
    n = nodes * gpus_per_node
    exposed_s = n * per_gpu_batch / many_nodes_images_s - per_gpu_batch / single
    if exposed_s <= 0:
        raise VoloError("the multi-node throughput scales perfectly or better: nothing to calibrate the network on.")
    allreduce_s = exposed_s / (1 - comm.overlap)
    bandwidth = ring_allreduce_s(n, params * comm.bytes_per_grad, 1.0) / allreduce_s  # the time at 1 GB/s, scaled
    return single, replace(comm, inter_node_gbytes_s=bandwidth)


def count_params(model_name: str) -> int:
    """Parameters of a registered VOLO variant, counted on the meta device (no memory, no weights)."""
    import torch

    import volo

    try:
        with torch.device("meta"):
            model = volo.create_model(model_name)
    except (KeyError, ValueError) as err:
        raise VoloError(
            f"--model {model_name!r} is not a VOLO variant ({err}); use volo_tiny, volo_d1 .. volo_d5."
        ) from None
    return sum(p.numel() for p in model.parameters())


def read_bench_json(path: Path, model_name: str) -> tuple[float, int]:
    """(train images/s, batch) for `model_name` from a benchmark result JSON.

    Accepts one row or a list of rows with keys model, batch, train_img_s (the fields of benchmarks/bench_model.py's
    BenchRow) and optionally impl (rows of impl "ours" are preferred).
    """
    if not path.is_file():
        raise VoloError(f"--bench-json {path} does not exist; pass a JSON result file from the benchmark.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VoloError(f"--bench-json {path} is not JSON ({err.msg} at line {err.lineno}).") from None
    rows = data if isinstance(data, list) else data.get("rows", [data]) if isinstance(data, dict) else []
    rows = [r for r in rows if isinstance(r, dict) and r.get("model") == model_name and "train_img_s" in r]
    rows.sort(key=lambda r: r.get("impl", "ours") != "ours")
    if not rows:
        raise VoloError(f"--bench-json {path} has no row with model {model_name!r} and train_img_s; check --model.")
    return float(rows[0]["train_img_s"]), int(rows[0].get("batch", WRITEUP_PER_GPU_BATCH))


def writeup_single_gpu_images_s(params: int, img_size: int, comm: CommModel = CommModel()) -> float:
    """A rough A100 images/s for a model of `params` at `img_size`, scaled from the write-up's D5 figure by
    parameters x tokens (compute per image grows with both). Used only where nothing was measured (the requeue
    budget of `volo slurm`); `volo plan` wants a measured figure."""
    d5 = single_gpu_from_node(WRITEUP_NODE_IMAGES_S, D5_PARAMS, 8, WRITEUP_PER_GPU_BATCH, comm)
    return d5 * (D5_PARAMS / params) * (224 / img_size) ** 2


def read_probe_json(path: Path) -> dict:
    """The JSON `python -m volo.distributed.allreduce_probe --json` wrote, checked."""
    if not path.is_file():
        raise VoloError(f"--probe-json {path} does not exist; run python -m volo.distributed.allreduce_probe --json.")
    try:
        data = json.loads(path.read_text())
        fit, n = data["fit"], int(data["world_size"])
        latency, busbw, cv = float(fit["latency_s"]), float(fit["busbw_gbs"]), float(data["straggler_cv"])
        nodes = int(data["nodes"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise VoloError(
            f"--probe-json {path} is not an all-reduce probe result ({type(err).__name__}: {err})."
        ) from None
    if n < 2 or busbw <= 0 or latency < 0 or cv < 0:
        raise VoloError(f"--probe-json {path}: world_size {n}, busbw {busbw}, latency {latency} make no sense.")
    return {"world_size": n, "nodes": nodes, "latency_s": latency, "busbw_gbs": busbw, "straggler_cv": cv}


def comm_from_probe(probe: dict, base: CommModel = CommModel()) -> CommModel:
    """`base` with the measured terms: a multi-node probe gives the inter-node bandwidth, a one-node probe the
    intra-node one; the latency per hop is the fitted latency over the probe's 2 (n-1) hops."""
    n = probe["world_size"]
    bandwidth = (
        {"inter_node_gbytes_s": probe["busbw_gbs"]} if probe["nodes"] > 1 else {"nvlink_gbytes_s": probe["busbw_gbs"]}
    )
    return replace(base, **bandwidth, hop_latency_s=probe["latency_s"] / (2 * (n - 1)),
                   straggler_cv=probe["straggler_cv"])  # fmt: skip


def images_s_from_run(run_dir: Path) -> float:
    """A run's measured images/s: the median over the second half of metrics/steps.jsonl (warm-up left out)."""
    path = run_dir / "metrics" / "steps.jsonl"
    if not path.is_file():
        raise VoloError(f"--from-run {run_dir}: no metrics/steps.jsonl; pass the run folder of a `volo train` run.")
    rates = []
    for line in path.read_text().splitlines():
        try:
            rates.append(float(json.loads(line)["images_per_s"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    if not rates:
        raise VoloError(f"--from-run {path} has no rows with images_per_s.")
    return statistics.median(rates[len(rates) // 2 :])
