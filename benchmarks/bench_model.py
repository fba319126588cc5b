"""Ours vs timm's VOLO, side by side in one process: same architecture, same weights, same batch.

Per model and implementation: the time of the real training step (`real_step.py`: token-label targets, MixToken,
token-labeling loss, backward, fused AdamW), train images/s, eval images/s,
peak memory (CUDA: max allocated during a train step; CPU: bytes of the tensors autograd saves for backward, the
activation memory, which needs no allocator statistics), forward GFLOP/image (torch.utils.flop_counter) and, on a
GPU, model-FLOP utilisation `3 * fwd_flops * train img/s / measured matmul peak`. The two implementations' steps
are interleaved (ours, timm, ours, ...) and each reports its median, so load from other processes hits both alike.

    python benchmarks/bench_model.py        # CPU: volo_tiny and volo_d1, small batch; GPU: D1..D5 + D5@448/512
    python benchmarks/bench_model.py --models volo_d1 --batch 64 --amp --compile
    volo bench                                         # the quick check: volo_tiny on CPU (well under a minute)

Writes the table to `benchmarks/results/model_<device>.md` with card/CPU, driver, versions, commit and date.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bench_env import RESULTS_DIR, StepClock, describe_environment, matmul_peak_flops, write_report
from real_step import make_optimizer, ours_step, timm_step, token_label_batch
from torch import nn

import volo
from volo.data.batch import Batch
from volo.models.fuse import fuse_for_inference
from volo.models.outlook_attention import set_backend
from volo.models.variants import VoloArch

GPU_PLAN = [("volo_d1", 224, 128), ("volo_d2", 224, 128), ("volo_d3", 224, 128), ("volo_d4", 224, 64),
            ("volo_d5", 224, 64), ("volo_d5", 448, 16), ("volo_d5", 512, 16)]  # fmt: skip
CPU_PLAN = [("volo_tiny", 224, 8), ("volo_d1", 224, 4)]
QUICK_PLAN = [("volo_tiny", 224, 8)]
REF_OP = "ours-refop"
"""`--ablate-outlook`: our model with the outlook op forced to the unfold/fold reference (what the kernel gains)."""


@dataclass
class BenchConfig:
    """What to measure."""

    plan: list[tuple[str, int, int]]
    """(model name, image size, train batch) per row pair."""
    steps: int = 10
    """Timed steps per implementation (after `warmup`)."""
    warmup: int = 3
    compile: bool = False
    """torch.compile both implementations (compile time excluded)."""
    grad_checkpointing: bool = False
    """Both implementations recompute their blocks' activations in the backward (memory for compute)."""
    compile_mode: str | None = None
    """torch.compile mode (None: the default); reduce-overhead / max-autotune replay CUDA graphs."""
    amp: bool = False
    """bf16 autocast (CUDA)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    out: Path | None = None
    """Report file; None = results/model_<device>.md."""
    impls: tuple[str, ...] = ("ours", "timm")


@dataclass
class BenchRow:
    impl: str
    model: str
    img_size: int
    batch: int
    fwd_bwd_ms: float
    """Median ms of one whole training step (targets, forward, loss, backward, AdamW); the name kept for the
    JSON readers (targets.py, `volo plan --bench-json`)."""
    train_img_s: float
    eval_img_s: float
    mem_mib: float
    fwd_gflop_per_img: float
    fwd_bwd_cpu_ms: float | None = None
    """CPU only: median process CPU time of the step (all threads)."""
    mfu: float | None = None


def timm_twin(model: volo.Volo) -> nn.Module:
    """timm's VOLO with the same architecture, loaded with our weights (strict: the keys are identical)."""
    from timm.models.volo import VOLO

    a: VoloArch = model.arch
    twin = VOLO(
        layers=list(a.layers), img_size=a.img_size, in_chans=a.in_chans, num_classes=a.num_classes,
        stem_hidden_dim=a.stem_hidden, embed_dims=list(a.embed_dims), num_heads=list(a.num_heads),
        mlp_ratio=a.mlp_ratio,
    )  # fmt: skip
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin


def prediction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Train-mode logits (B, classes), the same math for both: `head(cls) + 0.5 * max_tokens(aux_head)`."""
    out = model(x)
    if isinstance(out, volo.VoloTrainOutput):
        return out.cls_logits + 0.5 * out.token_logits.max(dim=1).values  # as timm: saves indices, not logits
    return out


def autocast(cfg: BenchConfig) -> contextlib.AbstractContextManager:
    if cfg.amp:
        return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, cfg: BenchConfig) -> int:
    """Bytes of distinct non-parameter tensors autograd keeps for backward in one training forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(cfg):
        prediction(model, x).float().sum()
    return sum(seen.values())


def forward_flops(model: nn.Module, img_size: int, device: torch.device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, img_size, img_size, device=device))
    model.train()
    return counter.get_total_flops()


def bench_pair(name: str, img_size: int, batch: int, cfg: BenchConfig, peak: float | None) -> list[BenchRow]:
    """Ours and timm's on one model/size/batch: interleaved train steps, then eval, then memory."""
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    ours = volo.create_model(name, img_size=img_size).to(device)
    models = {"ours": ours}
    if REF_OP in cfg.impls:  # ours with the outlook op forced to the unfold/fold reference: the kernel's share
        models[REF_OP] = copy.deepcopy(ours)
    if "timm" in cfg.impls:
        models["timm"] = timm_twin(ours).to(device)
    models = {k: m for k, m in models.items() if k in cfg.impls}
    for m in models.values():
        m.set_grad_checkpointing(cfg.grad_checkpointing)  # both have timm's API
    flops = forward_flops(ours, img_size, device)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    data = token_label_batch(batch, img_size, ours.arch.num_classes, device)
    mode = (cfg.compile_mode or "default") if cfg.compile else None
    opts = {k: make_optimizer(m) for k, m in models.items()}
    steps = {k: timm_step(m, opts[k][0], cfg.amp, mode) if k == "timm" else
             ours_step(m, opts[k][0], opts[k][1] == "fused", cfg.amp, mode) for k, m in models.items()}  # fmt: skip
    clock = StepClock(device)
    times: dict[str, list[tuple]] = {k: [] for k in models}
    for step in range(cfg.warmup + cfg.steps):
        for k, m in models.items():
            m.train()
            if k == "timm":
                _mark_step(cfg)  # ours marks its CUDA-graph steps itself (train_step)
            t0 = clock.mark()
            with outlook_op(k):
                steps[k](data)
            t1 = clock.mark()
            if step >= cfg.warmup:
                times[k].append((t0, t1))
    rows = []
    eval_speeds = _eval_speeds(models, batch * (2 if device.type == "cuda" else 1), img_size, cfg)
    for k, m in models.items():
        step_s = statistics.median(clock.seconds(a, b) for a, b in times[k])
        cpu = [clock.cpu_seconds(a, b) for a, b in times[k]]
        cpu_ms = 1e3 * statistics.median(cpu) if cpu[0] is not None else None
        eval_img_s = eval_speeds[k]
        with outlook_op(k):
            mem = _train_memory(steps[k], data) if device.type == "cuda" else saved_activation_bytes(m, x, cfg)
        train_img_s = batch / step_s
        rows.append(
            BenchRow(
                impl=k,
                model=name,
                img_size=img_size,
                batch=batch,
                fwd_bwd_ms=step_s * 1e3,
                train_img_s=train_img_s,
                eval_img_s=eval_img_s,
                mem_mib=mem / 2**20,
                fwd_gflop_per_img=flops / 1e9,
                fwd_bwd_cpu_ms=cpu_ms,
                mfu=(3 * flops * train_img_s / peak) if peak else None,
            )
        )
    del models, opts, steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


@contextlib.contextmanager
def outlook_op(impl: str):
    """For the `REF_OP` implementation, force the reference outlook op (unfold/fold) while it runs."""
    if impl != REF_OP:
        yield
        return
    set_backend("reference")
    try:
        yield
    finally:
        set_backend(None)


def _compiled(model: nn.Module, cfg: BenchConfig) -> Callable:
    return torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model


def _mark_step(cfg: BenchConfig) -> None:
    """With CUDA graphs, each call is a new step (its outputs may overwrite the previous replay's)."""
    if cfg.compile and cfg.compile_mode in ("reduce-overhead", "max-autotune"):
        torch.compiler.cudagraph_mark_step_begin()


def _eval_speeds(models: dict[str, nn.Module], batch: int, img_size: int, cfg: BenchConfig) -> dict[str, float]:
    """Eval images/s per implementation, their steps interleaved like the training steps. Each runs as its own
    inference path does: ours with the stem's BatchNorms folded (what `volo eval` / `volo predict` run), timm as is."""
    device = torch.device(cfg.device)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    clock = StepClock(device)
    spans: dict[str, list] = {k: [] for k in models}
    nets = {k: fuse_for_inference(copy.deepcopy(m).eval()) if k != "timm" else m.eval() for k, m in models.items()}
    fns = {k: _compiled(m, cfg) for k, m in nets.items()}
    with torch.no_grad(), autocast(cfg):
        for step in range(cfg.warmup + cfg.steps):
            for k in models:
                _mark_step(cfg)
                t0 = clock.mark()
                with outlook_op(k):
                    fns[k](x)
                if step >= cfg.warmup:
                    spans[k].append((t0, clock.mark()))
    for m in models.values():
        m.train()
    return {k: batch / statistics.median(clock.seconds(a, b) for a, b in spans[k]) for k in models}


def _train_memory(step: Callable[[Batch], None], data: Batch) -> int:
    """CUDA peak allocated during one training step, above what was allocated before it (weights, optimizer)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(data)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def format_table(rows: list[BenchRow], device: str) -> str:
    """Markdown table; the ratio in brackets is timm's time over ours (> 1: ours faster)."""
    cpu = device != "cuda"
    mem_label = "saved activations MiB" if cpu else "peak train mem MiB"
    extra = " step CPU-time ms |" if cpu else ""
    head = f"| model | res | batch | impl | train step ms |{extra} train img/s | eval img/s | {mem_label} |"
    head += " fwd GFLOP/img | MFU |"
    lines = [head, "|" + "---|" * (11 if cpu else 10)]
    base: dict[tuple, BenchRow] = {(r.model, r.img_size): r for r in rows if r.impl == "timm"}
    for r in rows:
        ref = base.get((r.model, r.img_size)) if r.impl != "timm" else None
        speedup = f" ({ref.fwd_bwd_ms / r.fwd_bwd_ms:.2f}x)" if ref else ""
        cells = [r.model, str(r.img_size), str(r.batch), r.impl, f"{r.fwd_bwd_ms:,.1f}{speedup}"]
        if cpu:
            ratio = f" ({ref.fwd_bwd_cpu_ms / r.fwd_bwd_cpu_ms:.2f}x)" if ref and r.fwd_bwd_cpu_ms else ""
            cells.append(f"{r.fwd_bwd_cpu_ms:,.1f}{ratio}" if r.fwd_bwd_cpu_ms is not None else "n/a")
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        cells += [
            f"{r.train_img_s:,.1f}",
            f"{r.eval_img_s:,.1f}",
            f"{r.mem_mib:,.1f}",
            f"{r.fwd_gflop_per_img:.2f}",
            mfu,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: BenchConfig) -> tuple[list[BenchRow], Path]:
    """Measure every plan entry, print the table, write the report; returns the rows and the report path."""
    device = torch.device(cfg.device)
    torch.backends.cudnn.benchmark = True  # as `volo train` runs (volo/training/speed.py); both implementations
    peak = matmul_peak_flops(device, torch.bfloat16 if cfg.amp else torch.float32) if device.type == "cuda" else None
    env = describe_environment(device)
    mode = f" ({cfg.compile_mode or 'default'})" if cfg.compile else ""
    amp = "bf16" if cfg.amp else "off"
    settings = f"steps {cfg.steps} (+{cfg.warmup} warm-up), compile={cfg.compile}{mode}, amp={amp}"
    settings += ", step: token-label targets + MixToken + token-labeling loss + fused AdamW (real_step.py)"
    if cfg.grad_checkpointing:
        settings += ", gradient checkpointing on (both)"
    if device.type == "cuda":
        settings += ", cudnn.benchmark on (both)"
    if peak:
        settings += f", measured matmul peak {peak / 1e12:.0f} TFLOP/s"
    out = cfg.out or RESULTS_DIR / f"model_{env.slug}.md"
    rows_json = out.with_suffix(".json")  # for `volo plan --bench-json`
    rows: list[BenchRow] = []
    for name, img_size, batch in cfg.plan:
        pair = bench_pair(name, img_size, batch, cfg, peak)
        rows += pair
        print("\n".join(format_table(pair, device.type).splitlines()[-len(pair) :]), flush=True)
        # every finished pair is on disk at once: a run cut short (a device call's timeout) keeps its rows
        write_report(out, "VOLO training and eval speed: ours vs timm", env, settings, format_table(rows, device.type))
        rows_json.write_text(json.dumps({"environment": asdict(env), "rows": [asdict(r) for r in rows]}, indent=1))
    print(format_table(rows, device.type))
    print(f"wrote {out} and {rows_json}")
    return rows, out


def parse_args(argv: list[str] | None = None, quick: bool = False) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv), quick=quick)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", help="model names (default: the device's plan)")
    parser.add_argument("--batch", type=int, help="train batch for every model (default: per plan)")
    parser.add_argument("--img-size", type=int, help="image size for every model (default: per plan)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile both implementations")
    parser.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
        help="torch.compile mode (implies --compile); reduce-overhead and max-autotune replay CUDA graphs",
    )
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on GPU, off CPU)"
    )
    parser.add_argument(
        "--ablate-outlook", action="store_true", help=f"add '{REF_OP}': ours with the unfold/fold outlook op"
    )
    parser.add_argument("--grad-checkpointing", action="store_true", help="both recompute block activations")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--ours-only", action="store_true", help="skip timm")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help="report file (default: benchmarks/results/model_<device>.md)")


def config_from_args(args: argparse.Namespace, quick: bool = False) -> BenchConfig:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise volo.VoloError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    base = GPU_PLAN if device == "cuda" else (QUICK_PLAN if quick else CPU_PLAN)
    if args.models:
        unknown = [m for m in args.models if m not in volo.list_models()]
        if unknown:
            raise volo.VoloError(f"--models {unknown} unknown; choose from {', '.join(volo.list_models())}.")
        sizes = {m: (s, b) for m, s, b in base}
        base = [(m, *sizes.get(m, (224, 8 if device == "cpu" else 64))) for m in args.models]
    plan = [(m, args.img_size or s, args.batch or b) for m, s, b in base]
    for _, s, b in plan:
        if s % 16 or b < 1:
            raise volo.VoloError(f"--img-size {s} must be a multiple of 16 and --batch {b} at least 1.")
    gpu = device == "cuda"
    mode = None if args.compile_mode in (None, "default") else args.compile_mode
    if args.threads:
        torch.set_num_threads(args.threads)
    return BenchConfig(
        plan=plan, steps=args.steps or (10 if gpu else (3 if quick else 5)),
        warmup=args.warmup if args.warmup is not None else (3 if gpu else 1),
        compile=args.compile or args.compile_mode is not None, compile_mode=mode,
        grad_checkpointing=args.grad_checkpointing,
        amp=gpu if args.amp is None else args.amp, device=device, out=args.out,
        impls=("ours",) + ((REF_OP,) if args.ablate_outlook else ()) + (() if args.ours_only else ("timm",)),
    )  # fmt: skip


if __name__ == "__main__":
    run(parse_args())
