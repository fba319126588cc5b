"""Outlook attention alone, at the stage-1 shapes of VOLO-D1..D5: fwd+bwd time and memory, side by side.

Rows per shape:
- op `reference` / `triton`: the bare operation `(v, logits) -> out` (`volo.models.outlook_attention`), the
  reference unfold/fold path vs the fused kernel (CUDA only);
- module `timm` / `ours`: the whole OutlookAttention layer (v, pooling, attn linear, the op, proj) of timm and
  ours with the same weights; ours uses the automatic backend (the fused kernel on CUDA).
Memory: CUDA peak allocated during fwd+bwd above what was allocated before; on CPU the bytes autograd saves for
backward. Time: median of interleaved repetitions (CUDA events on GPU).

    python benchmarks/bench_outlook.py            # GPU: bf16, training batches; CPU: fp32, batch 2, D1 and D5
    python benchmarks/bench_outlook.py --batch 8 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bench_env import RESULTS_DIR, StepClock, describe_environment, write_report

from volo.errors import VoloError
from volo.models.blocks import OutlookAttention
from volo.models.outlook_attention import available_backends, outlook_attention_reference


@dataclass(frozen=True)
class Stage1Shape:
    model: str
    img_size: int
    batch: int
    dim: int
    num_heads: int

    @property
    def grid(self) -> int:
        return self.img_size // 8


# stage-1 width/heads of each variant, at the training batches of shared/bench (timm_baseline.py)
SHAPES = [
    Stage1Shape("volo_d1", 224, 128, 192, 6),
    Stage1Shape("volo_d2", 224, 128, 256, 8),
    Stage1Shape("volo_d3", 224, 128, 256, 8),
    Stage1Shape("volo_d4", 224, 64, 384, 12),
    Stage1Shape("volo_d5", 224, 64, 384, 12),
    Stage1Shape("volo_d5", 448, 16, 384, 12),
]


@dataclass
class OutlookRow:
    shape: Stage1Shape
    level: str
    impl: str
    fwd_bwd_ms: float
    mem_mib: float


def _measure(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], device: torch.device) -> int:
    """Bytes of one fwd+bwd: CUDA peak above the start, or on CPU what autograd saves plus the output."""
    for t in inputs:
        t.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn().float().sum().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    saved: dict[int, int] = {}
    keep = {t.untyped_storage().data_ptr() for t in inputs}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in keep:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.float().sum().backward()
    return sum(saved.values()) + out.numel() * out.element_size()


def bench_shape(shape: Stage1Shape, dtype: torch.dtype, device: torch.device, steps: int, warmup: int):
    """All implementations on one shape; the repetitions of the implementations are interleaved."""
    import timm.models.volo as timm_volo

    torch.manual_seed(0)
    H = W = shape.grid
    h, w = math.ceil(H / 2), math.ceil(W / 2)
    head_dim = shape.dim // shape.num_heads
    v = torch.randn(shape.batch, H, W, shape.dim, device=device, dtype=dtype, requires_grad=True)
    logits = torch.randn(shape.batch, h, w, shape.num_heads * 81, device=device, dtype=dtype, requires_grad=True)
    x = torch.randn(shape.batch, H, W, shape.dim, device=device, dtype=dtype, requires_grad=True)
    ours = OutlookAttention(shape.dim, shape.num_heads).to(device, dtype)
    theirs = timm_volo.OutlookAttention(shape.dim, shape.num_heads, 3, 1, 2).to(device, dtype)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    scale = head_dim**-0.5
    op_args = (shape.num_heads, 3, 1, 2, scale)
    cases: dict[tuple[str, str], tuple[Callable[[], torch.Tensor], list[torch.Tensor]]] = {
        ("op", "reference"): (lambda: outlook_attention_reference(v, logits, *op_args), [v, logits]),
        ("module", "timm"): (lambda: theirs(x), [x]),
        ("module", "ours"): (lambda: ours(x), [x]),
    }
    if device.type == "cuda" and "triton" in available_backends():
        from volo.models.outlook_triton import outlook_attention_triton

        cases[("op", "triton")] = (lambda: outlook_attention_triton(v, logits, *op_args), [v, logits])
    memory = {key: _measure(fn, inputs, device) for key, (fn, inputs) in cases.items()}
    clock = StepClock(device)
    spans: dict[tuple[str, str], list] = {key: [] for key in cases}
    for step in range(warmup + steps):
        for key, (fn, inputs) in cases.items():
            t0 = clock.mark()
            out = fn()
            out.backward(torch.ones_like(out))
            t1 = clock.mark()
            for t in inputs:
                t.grad = None
            if step >= warmup:
                spans[key].append((t0, t1))
    return [
        OutlookRow(shape, level, impl, 1e3 * statistics.median(clock.seconds(a, b) for a, b in spans[(level, impl)]),
                   memory[(level, impl)] / 2**20)
        for level, impl in sorted(cases)
    ]  # fmt: skip


def format_table(rows: list[OutlookRow]) -> str:
    lines = ["| model | res | batch | C x heads | level | impl | fwd+bwd ms | vs reference/timm | memory MiB |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        base_impl = "reference" if r.level == "op" else "timm"
        base = next(b for b in rows if b.shape == r.shape and b.level == r.level and b.impl == base_impl)
        ratio = f"{base.fwd_bwd_ms / r.fwd_bwd_ms:.2f}x faster, {r.mem_mib / max(base.mem_mib, 1e-9):.2f}x memory"
        s = r.shape
        lines.append(
            f"| {s.model} | {s.img_size} | {s.batch} | {s.dim} x {s.num_heads} | {r.level} | {r.impl} | "
            f"{r.fwd_bwd_ms:,.2f} | {ratio} | {r.mem_mib:,.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 GPU, fp32 CPU")
    parser.add_argument("--batch", type=int, help="one batch for every shape (default: training batch; CPU 2)")
    parser.add_argument("--models", nargs="+", help="subset of volo_d1..volo_d5 (default: all on GPU, D1+D5 CPU)")
    parser.add_argument("--steps", type=int, help="timed repetitions (default 20 GPU, 3 CPU)")
    parser.add_argument("--out", type=Path, help="report file (default benchmarks/results/outlook_<device>.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VoloError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    gpu = device.type == "cuda"
    dtype = getattr(torch, args.dtype or ("bfloat16" if gpu else "float32"))
    wanted = args.models or ([s.model for s in SHAPES] if gpu else ["volo_d1", "volo_d5"])
    shapes = [s for s in SHAPES if s.model in wanted and (gpu or s.img_size == 224)]
    if not shapes:
        raise VoloError(f"--models {wanted} matches no stage-1 shape; choose from volo_d1..volo_d5.")
    batch = args.batch or (None if gpu else 2)
    shapes = [Stage1Shape(s.model, s.img_size, batch or s.batch, s.dim, s.num_heads) for s in shapes]
    steps = args.steps or (20 if gpu else 3)
    rows: list[OutlookRow] = []
    for shape in shapes:
        new = bench_shape(shape, dtype, device, steps, warmup=3 if gpu else 1)
        rows += new
        print(format_table(new), flush=True)
    env = describe_environment(device)
    out = args.out or RESULTS_DIR / f"outlook_{env.slug}.md"
    table = format_table(rows)
    write_report(out, "Outlook attention fwd+bwd at VOLO stage-1 shapes", env, f"dtype {dtype}, {steps} steps", table)
    rows_json = out.with_suffix(".json")  # for benchmarks/targets.py
    flat = [{**asdict(r.shape), "level": r.level, "impl": r.impl, "fwd_bwd_ms": r.fwd_bwd_ms, "mem_mib": r.mem_mib}
            for r in rows]  # fmt: skip
    rows_json.write_text(json.dumps({"environment": asdict(env), "dtype": str(dtype), "rows": flat}, indent=1) + "\n")
    print(table)
    print(f"wrote {out} and {rows_json}")
    return out


if __name__ == "__main__":
    main()
