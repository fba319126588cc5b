"""`volo plan`: predict images/s, scaling efficiency, time-to-train and GPU-hours for N nodes x G GPUs.

volo plan --model volo_d5 --node-images-s 500 --per-gpu-batch 44 --nodes 1,2,5,10 --plot plan.png
volo plan --model volo_d1 --images-s 1150 --per-gpu-batch 128 --nodes 1,2,4
volo plan --model volo_d5 --bench-json bench.json --nodes 1,5
volo plan --model volo_d5 --from-run runs/d5_224 --probe-json probe.json --nodes 1,5    # measured mode

Measured mode (`--probe-json` from `python -m volo.distributed.allreduce_probe`, run on the cluster): the network
terms (bus bandwidth, latency, straggler spread) are measured; the table of the write-up preset (its 8.3 GB/s was
fitted to the write-up's own 500 -> 2,100 img/s) is printed below it for comparison.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from volo.distributed.planner import (
    IMAGENET_TRAIN_IMAGES,
    WRITEUP_PER_GPU_BATCH,
    CommModel,
    Workload,
    comm_from_probe,
    count_params,
    images_s_from_run,
    predict,
    read_bench_json,
    read_probe_json,
    single_gpu_from_node,
)
from volo.distributed.planner_plot import plot_plan
from volo.errors import VoloError

DEFAULTS = CommModel()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="predict throughput, scaling and time-to-train on N nodes",
        description="Scaling planner: single-GPU throughput + a ring all-reduce model -> images/s, efficiency, "
        "hours and GPU-hours per cluster size (assumptions in docs/cluster.md).",
    )
    parser.add_argument("--model", default="volo_d5", help="VOLO variant (for its parameter count)")
    parser.add_argument("--params", type=int, default=None, help="parameter count (instead of --model's)")
    speed = parser.add_mutually_exclusive_group(required=True)
    speed.add_argument("--images-s", type=float, help="measured training images/s of ONE GPU")
    speed.add_argument("--node-images-s", type=float, help="measured training images/s of ONE NODE")
    speed.add_argument("--bench-json", type=Path, help="benchmark result JSON (rows with model, batch, train_img_s)")
    speed.add_argument("--from-run", type=Path, help="a one-node `volo train` run folder: its measured images/s")
    parser.add_argument("--probe-json", type=Path, default=None, help="measured all-reduce (allreduce_probe --json)")
    batch_help = f"images per GPU per step (default {WRITEUP_PER_GPU_BATCH})"
    parser.add_argument("--per-gpu-batch", type=int, default=None, help=batch_help)
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8, a DGX)")
    parser.add_argument("--nodes", default="1,2,4,5,8", help="comma-separated node counts")
    parser.add_argument("--epochs", type=float, default=300.0, help="epochs to train (default 300)")
    parser.add_argument("--dataset-images", type=int, default=IMAGENET_TRAIN_IMAGES,
                        help=f"training images per epoch (default {IMAGENET_TRAIN_IMAGES:,}, ImageNet-1k)")  # fmt: skip
    parser.add_argument("--nvlink-gbs", type=float, default=DEFAULTS.nvlink_gbytes_s, help="intra-node busbw GB/s")
    parser.add_argument(
        "--inter-node-gbs", type=float, default=DEFAULTS.inter_node_gbytes_s, help="effective inter-node busbw GB/s"
    )
    parser.add_argument("--overlap", type=float, default=DEFAULTS.overlap, help="all-reduce fraction hidden (0..1)")
    parser.add_argument("--bytes-per-grad", type=int, default=DEFAULTS.bytes_per_grad,
                        help="bytes all-reduced per gradient element (4: fp32 DDP buckets)")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _node_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise VoloError(f"--nodes {text!r} must be comma-separated whole numbers, like 1,2,5.") from None
    if not counts or counts[0] < 1:
        raise VoloError(f"--nodes {text!r} needs node counts of at least 1.")
    return counts


def _print_table(title: str, predictions: list, one_node: float) -> None:
    print(title)
    header = f"{'nodes':>5} {'GPUs':>5} {'images/s':>9} {'eff/GPU':>8} {'eff/node':>8} {'step ms':>8} "
    print(header + f"{'comm ms':>8} {'hours':>8} {'days':>6} {'GPU-h':>8}")
    for p in predictions:
        print(
            f"{p.nodes:>5} {p.gpus:>5} {p.images_s:>9.1f} {p.efficiency:>8.1%} "
            f"{p.images_s / (p.nodes * one_node):>8.1%} {p.step_s * 1e3:>8.1f} {p.exposed_comm_s * 1e3:>8.1f} "
            f"{p.hours:>8.1f} {p.hours / 24:>6.1f} {p.gpu_hours:>8.0f}"
        )


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.overlap <= 1.0:
        raise VoloError(f"--overlap {args.overlap} must lie between 0 and 1.")
    preset = CommModel(
        nvlink_gbytes_s=args.nvlink_gbs,
        inter_node_gbytes_s=args.inter_node_gbs,
        overlap=args.overlap,
        bytes_per_grad=args.bytes_per_grad,
    )
    probe = read_probe_json(args.probe_json) if args.probe_json is not None else None
    measured = comm_from_probe(probe, preset) if probe is not None else None
    params = args.params if args.params is not None else count_params(args.model)
    batch, node = args.per_gpu_batch, None
    if args.bench_json is not None:
        single, bench_batch = read_bench_json(args.bench_json, args.model)
        batch = batch or bench_batch
    elif args.node_images_s is not None or args.from_run is not None:
        node = args.node_images_s if args.node_images_s is not None else images_s_from_run(args.from_run)
    else:
        single = args.images_s
    batch = batch or WRITEUP_PER_GPU_BATCH
    counts = _node_counts(args.nodes)
    tables = ([("measured", measured)] if measured is not None else []) + [("write-up preset", preset)]
    results, singles = {}, {}
    for name, comm in tables:  # a one-node measurement is inverted through each model's own terms
        singles[name] = single_gpu_from_node(node, params, args.gpus_per_node, batch, comm) if node else single
        work = Workload(params=params, single_gpu_images_s=singles[name], per_gpu_batch=batch, epochs=args.epochs,
                        dataset_images=args.dataset_images)  # fmt: skip
        results[name] = [predict(work, n, args.gpus_per_node, comm) for n in counts]
    single = singles[tables[0][0]]
    workload = Workload(params, single, batch, args.epochs, args.dataset_images)
    if args.json:
        out = {"workload": asdict(workload), "comm": {name: asdict(comm) for name, comm in tables},
               "predictions": {name: [asdict(p) for p in preds] for name, preds in results.items()}}  # fmt: skip
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{args.model}: {params / 1e6:.1f} M params, {params * preset.bytes_per_grad / 1e9:.2f} GB of gradients; "
            f"1 GPU {single:.1f} img/s at batch {batch}; {args.epochs:g} epochs x {args.dataset_images:,} images"
            + (f" (from {node:.1f} img/s on one node)" if node else "")
        )
        for name, comm in tables:
            if name == "measured":
                title = (
                    f"measured ({probe['world_size']}-rank probe on {probe['nodes']} node(s)): bus bandwidth "
                    f"{probe['busbw_gbs']:.2f} GB/s, latency {comm.hop_latency_s * 1e6:.1f} us per hop, "
                    f"straggler cv {comm.straggler_cv:.3f}"
                )
            else:
                title = (
                    f"write-up preset: inter-node {comm.inter_node_gbytes_s:g} GB/s (fitted to the write-up's own "
                    "500 -> 2,100 img/s), no latency or straggler terms"
                )
            work = Workload(params, singles[name], batch, args.epochs, args.dataset_images)
            one_node = predict(work, 1, args.gpus_per_node, comm).images_s
            _print_table(title, results[name], one_node)
    if args.plot is not None:
        name = tables[0][0]
        title = f"{args.model}: {args.gpus_per_node} GPUs/node, {args.epochs:g} epochs ({name})"
        print(f"plot: {plot_plan(results[name], single, title, args.plot)}")
    return 0
