"""Registers, spills and occupancy of the fused outlook kernels, compiled for a GPU target on a machine without one.

Triton compiles to a cubin without a device (`triton.compile` with a `GPUTarget`), and `cuobjdump -res-usage` (it
ships with Triton) reads each kernel's registers and stack (the stack is where spilled registers go). Every launch
the op makes at one model's stage-1 shape is compiled as it is launched (constexprs, num_warps, 16-byte-aligned
pointers as `outlook_triton._aligned` guarantees); `--unaligned` also shows the cliff an unaligned pointer hits.

    python3 benchmarks/kernel_resources.py                       # VOLO-D1 stage 1 (6 heads x 32), sm_90
    python3 benchmarks/kernel_resources.py --heads 12 --head-dim 32 --dtypes bf16 --out /tmp/d5.md

Writes `benchmarks/results/kernel_resources_sm90.md` (versions, commit, date) unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
from bench_env import RESULTS_DIR, describe_environment, write_report
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from volo.models import outlook_triton as ot
from volo.models import outlook_triton_kernels as kernels

TYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
REGISTERS_PER_SM = 65_536
MAX_THREADS_PER_SM = 2048


def launches(dtype: str, heads: int, head_dim: int, H: int, K: int = 3, S: int = 2):
    """(name, kernel, signature, constexprs, num_warps) of every launch one forward + backward makes."""
    C, pad, d = heads * head_dim, K // 2, triton.next_power_of_2(head_dim)
    ints = dict.fromkeys(["H", "W", "h", "w", "NH"], "i32") | {"scale": "fp32"}
    base = dict(C=C, D=head_dim, K=K, PAD=pad, S=S)
    for py, px, _, windows in ot.parity_classes(H, H, K, pad, S):
        sig = {"v_ptr": f"*{dtype}", "logits_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "lse_ptr": "*fp32", **ints}
        const = base | dict(PY=py, PX=px, BLOCK_P=ot._PIXEL_BLOCK, BLOCK_D=d, WRITE_LSE=True)
        yield f"fwd ({py},{px}), {windows} windows", kernels.outlook_fwd_kernel, sig, const, ot._warps(windows)
    main = ot.kk_main(K)
    block_w = max(1, min(64, ot._WINDOW_TILE_ELEMENTS // (main * d)))
    sig = {f"{n}_ptr": f"*{dtype}" for n in ("grad", "v", "logits")} | {"lse_ptr": "*fp32", "dlogits_ptr": f"*{dtype}"}
    const = base | dict(BLOCK_W=block_w, BLOCK_D=d, KK_MAIN=main)
    yield "bwd_logits", kernels.outlook_bwd_logits_kernel, sig | ints, const, 4
    for py, px, _, windows in ot.parity_classes(H, H, K, pad, S):
        sig = {"grad_ptr": f"*{dtype}", "logits_ptr": f"*{dtype}", "lse_ptr": "*fp32", "dv_ptr": f"*{dtype}", **ints}
        const = base | dict(PY=py, PX=px, BLOCK_P=ot._PIXEL_BLOCK, BLOCK_D=d)
        yield f"bwd_v ({py},{px}), {windows} windows", kernels.outlook_bwd_v_kernel, sig, const, ot._warps(windows)


def resources(kernel, signature: dict, constexprs: dict, num_warps: int, aligned: bool, arch: int) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of the kernel compiled for sm_<arch>."""
    sig = {**signature, **dict.fromkeys(constexprs, "constexpr")}
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, t in signature.items() if t.startswith("*")}
    src = ASTSource(
        fn=kernel,
        signature=sig,
        constexprs={(names.index(k),): v for k, v in constexprs.items()},
        attrs=attrs if aligned else {},
    )
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        text = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if not found:
        raise RuntimeError(f"cuobjdump gave no resource usage: {text[-500:]}")
    return int(found.group(1)), int(found.group(2))


def occupancy(registers: int, num_warps: int) -> float:
    """Resident threads per SM / 2048, as registers allow (allocation granularity ignored)."""
    threads = 32 * num_warps
    blocks = REGISTERS_PER_SM // max(1, registers * threads)
    return min(blocks * threads, MAX_THREADS_PER_SM) / MAX_THREADS_PER_SM


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--size", type=int, default=28, help="stage-1 side (image / 8)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(TYPES), default=["bf16", "fp32"])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--unaligned", action="store_true", help="also compile without pointer alignment")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    env = describe_environment(torch.device("cpu"))
    settings = (f"compiled for sm_{args.arch} without a GPU (triton.compile + cuobjdump), {args.heads} heads x "
                f"{args.head_dim}, stage-1 side {args.size}, python {sys.version.split()[0]}")  # fmt: skip
    out = args.out or RESULTS_DIR / f"kernel_resources_sm{args.arch}.md"
    lines = ["| dtype | kernel | warps | pointers | registers | stack bytes (spills) | occupancy |", "|---" * 7 + "|"]
    for dtype in args.dtypes:
        for name, kernel, sig, const, warps in launches(TYPES[dtype], args.heads, args.head_dim, args.size):
            for aligned in (True, False) if args.unaligned else (True,):
                regs, stack = resources(kernel, sig, const, warps, aligned, args.arch)
                row = f"| {dtype} | {name} | {warps} | {'16B' if aligned else 'unaligned'} | {regs} | {stack} | "
                lines.append(row + f"{100 * occupancy(regs, warps):.1f}% |")
                print(lines[-1], flush=True)
                title = "Fused outlook kernels: registers and spills per launch"
                write_report(out, title, env, settings, "\n".join(lines))  # each row as soon as it is known
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
