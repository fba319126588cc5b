"""Where the time goes in one eval batch: ours (as `volo eval` runs it: BatchNorms folded, no_grad) vs timm's VOLO
(same weights, eval mode), profiled side by side with the categories of `profile_step.py`.

    python3 benchmarks/profile_eval.py                      # CPU: volo_tiny, batch 8; GPU: volo_d1, 256, bf16
    python3 benchmarks/profile_eval.py --models volo_d1 --batch 4 --threads 1

Writes `benchmarks/results/profile_eval_<device>.md` (device, driver, versions, commit, date, threads, load).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from bench_env import RESULTS_DIR, describe_environment, write_report
from bench_model import timm_twin
from profile_step import StepProfile, _self_times, _sync, format_pair
from torch.profiler import ProfilerActivity, profile

import volo
from volo.models.fuse import fuse_for_inference


def profile_eval_pair(name: str, img_size: int, batch: int, device: torch.device, amp: bool, steps: int, warmup: int):
    torch.manual_seed(0)
    ours = volo.create_model(name, img_size=img_size).eval()
    nets = {"ours": fuse_for_inference(copy.deepcopy(ours)).to(device), "timm": timm_twin(ours).to(device).eval()}
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    wall: dict[str, list[float]] = {k: [] for k in nets}
    cpu: dict[str, list[float]] = {k: [] for k in nets}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for step in range(warmup + steps):
            for k, net in nets.items():  # interleaved: load from other processes hits both alike
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                net(x)
                _sync(device)
                if step >= warmup:
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        profiles = []
        for k, net in nets.items():
            _sync(device)
            with profile(activities=activities) as prof:
                t0 = time.perf_counter()
                for _ in range(steps):
                    net(x)
                _sync(device)
                profiled_s = time.perf_counter() - t0
            op_ms, op_calls = _self_times(prof.events(), device, steps)
            profiles.append(
                StepProfile(
                    k,
                    1e3 * statistics.median(wall[k]),
                    1e3 * statistics.median(cpu[k]) if device.type == "cpu" else None,
                    1e3 * profiled_s / steps,
                    op_ms,
                    op_calls,
                    "n/a (eval)",
                )  # fmt: skip
            )
    return profiles


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="model names (default: volo_tiny on CPU, volo_d1 on CUDA)")
    parser.add_argument("--batch", type=int, help="eval batch (default: CPU 8, GPU 256)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, help="default: CPU 1, GPU 3")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise volo.VoloError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    if args.img_size % 16:
        raise volo.VoloError(f"--img-size {args.img_size} must be a multiple of 16.")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    names = args.models or (["volo_d1"] if gpu else ["volo_tiny"])
    batch = args.batch or (256 if gpu else 8)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    env = describe_environment(device)
    settings = (f"eval forward (no_grad{', bf16 autocast' if gpu else ''}), ours BatchNorm-folded as `volo eval`; "
                f"{args.steps} timed + {args.steps} profiled batches, {torch.get_num_threads()} torch threads, "
                f"load average at start {load}; 'step' below = one eval batch")  # fmt: skip
    out = args.out or RESULTS_DIR / f"profile_eval_{env.slug}.md"
    sections = []
    for name in names:
        pair = profile_eval_pair(name, args.img_size, batch, device, gpu, args.steps,
                                 args.warmup if args.warmup is not None else (3 if gpu else 1))  # fmt: skip
        sections.append(format_pair(name, args.img_size, batch, pair, device.type))
        print(sections[-1] + "\n", flush=True)
        write_report(out, "One eval batch profiled: ours vs timm", env, settings, "\n\n".join(sections))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
