"""Where the time goes in one training step: ours vs timm's VOLO, same weights, profiled side by side.

One step = the real training step (`real_step.py`: token-label targets, MixToken, token-labeling loss, backward,
fused AdamW; ours is `volo.training.step.train_step`) -- the step `bench_model.py` times. Per implementation:
warm-up steps, then `--steps` steps timed without the profiler (ours and timm's
interleaved, so load from other processes hits both alike), then `--steps` steps under `torch.profiler`.

What is grouped: on CPU each op's self CPU time (time on the calling thread not spent in a child op; intra-op
threads work inside their op; every op inside `Optimizer.step` counts as optimizer), on CUDA each kernel's GPU
time (memcpy/memset included). `RULES` below maps every op/kernel name to one of `CATEGORIES` (the parts of
docs/performance.md); edit it there. The profiler's own overhead shows as the gap between the step wall time with
and without it.

    python benchmarks/profile_step.py                  # CPU: volo_tiny, batch 8 (< 1 min); GPU: volo_d1, 128, bf16
    python benchmarks/profile_step.py --models volo_tiny,volo_d1 --threads 1    # CPU: tiny @ 8 and D1 @ 2
    python benchmarks/profile_step.py --models volo_d1 --batch 128 --amp bf16   # GPU: the D1 training step

Writes `benchmarks/results/profile_<device>.md` (device, driver, versions, commit, date, threads, load average).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_env import RESULTS_DIR, describe_environment, write_report
from bench_model import GPU_PLAN, timm_twin
from real_step import make_optimizer, ours_step, timm_step, token_label_batch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import volo

# Report rows, in this order.
CATEGORIES = [
    "outlook attention",
    "matmul / linear",
    "attention (sdpa)",
    "convolution (stem)",
    "batch norm",
    "layer norm",
    "softmax",
    "elementwise / activation",
    "copies / layout",
    "optimizer",
    "other",
]

# (category, regex searched in the lower-cased op or kernel name); the first match wins, no match is "other".
# CPU names are aten ops (`aten::addmm`); CUDA names are kernels (`sm90_xmma_gemm_...`, `_outlook_fwd_kernel`).
RULES: list[tuple[str, str]] = [
    # autograd's wrappers (`AddmmBackward0`, `evaluate_function: ...`, AccumulateGrad): engine time only; the
    # work itself is in the aten ops they call
    ("other", r"autograd|backward\d+$"),
    # F.unfold = im2col, F.fold = col2im (each the other's backward); our Triton ops/kernels
    ("outlook attention", r"im2col|col2im|fold|outlook"),
    ("attention (sdpa)", r"scaled_dot_product|sdpa|flash|fmha|efficient_attention"),
    # before matmul: cuDNN's implicit-GEMM convolutions are named `..._fprop_implicit_gemm_...`
    ("convolution (stem)", r"convol|conv2d|conv_|fprop|dgrad|wgrad|winograd"),
    ("batch norm", r"batch_norm|batchnorm|bn_fw|bn_bw"),
    ("layer norm", r"layer_norm|layernorm|gammabeta"),
    ("softmax", r"softmax"),  # also the loss's log_softmax
    # before elementwise: the fused/foreach AdamW kernels are `multi_tensor_apply_kernel<...Adam...>`
    ("optimizer", r"adam|_foreach|multi_tensor_apply|optimizer\."),
    ("matmul / linear", r"addmm|bmm|aten::mm$|aten::matmul$|linear|gemm|gemv|cutlass|nvjet|xmma|cublas|splitk"),
    # before elementwise: CUDA copies are `elementwise_kernel<...direct_copy_kernel_cuda...>`; views (CPU dispatch
    # time only, no kernel) count as layout too
    (
        "copies / layout",
        r"copy|clone|contiguous|catarray|nchwtonhwc|nhwctonchw|memcpy|^detach_?$|aten::(cat|stack|to|view|_unsafe_view|"
        r"reshape|_reshape_alias|permute|transpose|t|expand|as_strided|unbind|select|slice|split|chunk|narrow|"
        r"squeeze|unsqueeze|flatten|unflatten|alias|detach|lift_fresh)_?$",
    ),
    # small reductions (bias grads, the aux head's max, outlook's avg-pool) count here: memory-bound the same way
    (
        "elementwise / activation",
        r"gelu|relu|threshold|elementwise|reduce_kernel|memset|fill|zero_|avg_pool|aten::(add|sub|rsub|mul|div|neg|"
        r"exp|sqrt|rsqrt|pow|where|maximum|minimum|max|sum|mean|amax|dropout|native_dropout|clamp|clamp_min|clamp_max|"
        r"abs|sigmoid|tanh|lerp|addcmul|addcdiv)_?$",
    ),
]
_COMPILED = [(category, re.compile(pattern)) for category, pattern in RULES]
assert all(category in CATEGORIES for category, _ in RULES)


def categorize(name: str) -> str:
    """The category of one aten op or CUDA kernel name (see RULES)."""
    lowered = name.lower()
    return next((category for category, rule in _COMPILED if rule.search(lowered)), "other")


@dataclass
class ProfileConfig:
    """What to profile."""

    plan: list[tuple[str, int, int]]
    """(model name, image size, batch) per model."""
    device: str
    amp: bool
    """bf16 autocast around the forward and loss."""
    steps: int
    """Steps timed without the profiler, then the same number profiled, per implementation."""
    warmup: int
    out: Path | None = None
    """Report file; None = results/profile_<device>.md."""


@dataclass
class StepProfile:
    """One implementation's profiled step: time per op/kernel name, per step."""

    impl: str
    wall_ms: float
    """Median step wall time without the profiler."""
    cpu_ms: float | None
    """CPU only: median process CPU time of a step (all threads)."""
    profiled_wall_ms: float
    """Mean step wall time under the profiler (its overhead included)."""
    op_ms: dict[tuple[str, str], float]
    """Self CPU (CPU) or kernel (CUDA) milliseconds per step, by (op/kernel name, category)."""
    op_calls: dict[tuple[str, str], float]
    """Calls per step, by (name, category)."""
    optimizer: str

    @property
    def total_ms(self) -> float:
        return sum(self.op_ms.values())

    def by_category(self) -> dict[str, float]:
        totals = dict.fromkeys(CATEGORIES, 0.0)
        for (_, category), ms in self.op_ms.items():
            totals[category] += ms
        return totals


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_pair(name: str, img_size: int, batch: int, cfg: ProfileConfig) -> list[StepProfile]:
    """Ours and timm's VOLO with identical weights: warm-up, timed steps (interleaved), then each profiled."""
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    ours = volo.create_model(name, img_size=img_size)
    models = {"ours": ours.to(device).train(), "timm": timm_twin(ours).to(device).train()}
    opts = {k: make_optimizer(m) for k, m in models.items()}
    steps = {"ours": ours_step(models["ours"], opts["ours"][0], opts["ours"][1] == "fused", cfg.amp, None),
             "timm": timm_step(models["timm"], opts["timm"][0], cfg.amp, None)}  # fmt: skip
    data = token_label_batch(batch, img_size, ours.arch.num_classes, device)
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for step in range(cfg.warmup + cfg.steps):
        for k in models:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            steps[k](data)
            _sync(device)
            if step >= cfg.warmup:
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiles = []
    for k in models:
        _sync(device)
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for _ in range(cfg.steps):
                steps[k](data)
            _sync(device)
            profiled_s = time.perf_counter() - t0
        op_ms, op_calls = _self_times(prof.events(), device, cfg.steps)
        assert sum(op_ms.values()) > 0, f"the profiler recorded no {'kernels' if device.type == 'cuda' else 'ops'}"
        profiles.append(
            StepProfile(
                impl=k,
                wall_ms=1e3 * statistics.median(wall[k]),
                cpu_ms=1e3 * statistics.median(cpu[k]) if device.type == "cpu" else None,
                profiled_wall_ms=1e3 * profiled_s / cfg.steps,
                op_ms=op_ms,
                op_calls=op_calls,
                optimizer=opts[k][1],
            )
        )
    del models, opts
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return profiles


def _self_times(events, device: torch.device, steps: int) -> tuple[dict, dict]:
    """Milliseconds and calls per step by (name, category): CUDA kernels' GPU time on a GPU, ops' self CPU time
    on CPU, where every op inside `Optimizer.step`/`zero_grad` counts as optimizer (its `aten::add_` of the step
    counters is not the model's elementwise work)."""
    ms: dict[tuple[str, str], float] = defaultdict(float)
    calls: dict[tuple[str, str], float] = defaultdict(float)
    for evt in events:
        if device.type == "cuda":
            # kernels, memcpy, memset; not the GPU-side spans of record_function ranges (they would count twice)
            annotation = evt.is_user_annotation or "annotation" in (evt.activity_type or "")
            if evt.device_type != DeviceType.CUDA or annotation:
                continue
            key, us = (evt.name, categorize(evt.name)), evt.time_range.elapsed_us()
        else:
            if evt.device_type != DeviceType.CPU or evt.is_async:
                continue
            key, us = (evt.name, "optimizer" if _in_optimizer(evt) else categorize(evt.name)), evt.self_cpu_time_total
        ms[key] += us / 1e3 / steps
        calls[key] += 1 / steps
    return dict(ms), dict(calls)


def _in_optimizer(evt) -> bool:
    while evt is not None:
        if evt.name.startswith("Optimizer."):
            return True
        evt = evt.cpu_parent
    return False


def _ms(value: float) -> str:
    return f"{value:,.2f}"


def format_pair(name: str, img_size: int, batch: int, pair: list[StepProfile], device: str, top: int = 15) -> str:
    """Markdown section for one model: step times, the category table, the top ops/kernels of each."""
    ours, theirs = pair
    unit = "GPU kernel time" if device == "cuda" else "self CPU time of ops (calling thread)"
    gap = "GPU idle (wall minus kernel time)" if device == "cuda" else "outside any op (Python, framework)"
    lines = [
        f"## {name}, batch {batch}, {img_size}x{img_size}",
        "",
        "| | ours | timm | timm / ours |",
        "|---|---|---|---|",
        f"| step wall ms, median, no profiler | {_ms(ours.wall_ms)} | {_ms(theirs.wall_ms)} | "
        f"{theirs.wall_ms / ours.wall_ms:.2f}x |",
    ]
    if ours.cpu_ms is not None and theirs.cpu_ms is not None:
        lines.append(
            f"| step process CPU ms, median (all threads) | {_ms(ours.cpu_ms)} | {_ms(theirs.cpu_ms)} | "
            f"{theirs.cpu_ms / ours.cpu_ms:.2f}x |"
        )
    lines += [
        f"| step wall ms under the profiler | {_ms(ours.profiled_wall_ms)} | {_ms(theirs.profiled_wall_ms)} | "
        f"{theirs.profiled_wall_ms / ours.profiled_wall_ms:.2f}x |",
        f"| profiled {unit} ms | {_ms(ours.total_ms)} | {_ms(theirs.total_ms)} | "
        f"{theirs.total_ms / ours.total_ms:.2f}x |",
        f"| {gap} ms | {_ms(ours.profiled_wall_ms - ours.total_ms)} | "
        f"{_ms(theirs.profiled_wall_ms - theirs.total_ms)} | |",
        "",
        f"Per category, {unit}, ms per step:",
        "",
        "| category | ours ms/step | ours % | timm ms/step | timm % | timm / ours |",
        "|---|---|---|---|---|---|",
    ]
    cats = {p.impl: p.by_category() for p in pair}
    for category in CATEGORIES:
        a, b = cats["ours"][category], cats["timm"][category]
        ratio = f"{b / a:.2f}x" if a > 0 and b > 0 else ""
        lines.append(
            f"| {category} | {_ms(a)} | {100 * a / ours.total_ms:.1f} | {_ms(b)} | {100 * b / theirs.total_ms:.1f} "
            f"| {ratio} |"
        )
    lines.append(f"| total | {_ms(ours.total_ms)} | 100.0 | {_ms(theirs.total_ms)} | 100.0 | "
                 f"{theirs.total_ms / ours.total_ms:.2f}x |")  # fmt: skip
    for p in pair:
        lines += ["", f"Top {top} {'kernels' if device == 'cuda' else 'ops'}, {p.impl} (AdamW {p.optimizer}):", ""]
        lines += [f"| # | {'kernel' if device == 'cuda' else 'op'} | category | calls/step | ms/step | % |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        ranked = sorted(p.op_ms.items(), key=lambda kv: -kv[1])[:top]
        for i, ((op, category), ms) in enumerate(ranked, 1):
            shown = (op if len(op) <= 100 else op[:97] + "...").replace("|", "\\|")
            calls = p.op_calls[(op, category)]
            lines.append(f"| {i} | `{shown}` | {category} | {calls:g} | {_ms(ms)} | {100 * ms / p.total_ms:.1f} |")
    return "\n".join(lines)


def run(cfg: ProfileConfig) -> tuple[dict[str, list[StepProfile]], Path]:
    """Profile every plan entry, print and write the report; returns the profiles by model and the report path."""
    device = torch.device(cfg.device)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    sections, results = [], {}
    for name, img_size, batch in cfg.plan:
        pair = profile_pair(name, img_size, batch, cfg)
        results[name] = pair
        sections.append(format_pair(name, img_size, batch, pair, device.type))
        print(sections[-1] + "\n", flush=True)
    env = describe_environment(device)
    settings = (
        f"amp {'bf16' if cfg.amp else 'off'}, {cfg.steps} timed + {cfg.steps} profiled steps after {cfg.warmup} "
        f"warm-up, {torch.get_num_threads()} torch threads, load average at start {load}"
    )
    out = cfg.out or RESULTS_DIR / f"profile_{env.slug}.md"
    write_report(out, "One training step profiled: ours vs timm", env, settings, "\n\n".join(sections))
    print(f"wrote {out}")
    return results, out


def config_from_args(argv: list[str] | None = None) -> ProfileConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="names, comma or space separated (default: volo_tiny CPU, D1 GPU)")
    parser.add_argument("--batch", type=int, help="batch for every model (default: CPU 8 tiny, 2 others; GPU 128/64)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--amp", choices=["bf16", "none"], help="bf16 autocast (default: bf16 on CUDA, none on CPU)")
    parser.add_argument("--steps", type=int, help="steps timed, then profiled, per model (default 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: CPU 1, GPU 3)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help="report file (default: benchmarks/results/profile_<device>.md)")
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        raise volo.VoloError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    gpu = device == "cuda"
    names = [n for item in (args.models or ["volo_d1" if gpu else "volo_tiny"]) for n in item.split(",") if n]
    unknown = [n for n in names if n not in volo.list_models()]
    if unknown:
        raise volo.VoloError(f"--models {unknown} unknown; choose from {', '.join(volo.list_models())}.")
    gpu_batch = {m: b for m, s, b in reversed(GPU_PLAN) if s == 224}
    plan = []
    for n in names:
        batch = args.batch or (gpu_batch.get(n, 64) if gpu else (8 if n == "volo_tiny" else 2))
        plan.append((n, args.img_size, batch))
    if args.img_size % 16:
        raise volo.VoloError(f"--img-size {args.img_size} must be a multiple of 16 (the token grid is img_size / 16).")
    if min(b for _, _, b in plan) < 1 or (args.steps is not None and args.steps < 1):
        raise volo.VoloError("--batch and --steps must be at least 1.")
    if args.threads:
        torch.set_num_threads(args.threads)
    return ProfileConfig(
        plan=plan, device=device, amp=(args.amp or ("bf16" if gpu else "none")) == "bf16",
        steps=args.steps or 3, warmup=args.warmup if args.warmup is not None else (3 if gpu else 1),
        out=args.out,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    return run(config_from_args(argv))[1]


if __name__ == "__main__":
    main()
