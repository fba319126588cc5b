"""Fused outlook attention in Triton: forward and backward, never materialising the unfolded tensors.

Shapes (as `volo.models.outlook_attention`): `v_bhwc (B, H, W, C)`, `logits (B, h, w, nh*K^4)` with the row-major
layout `[head][a][b]` (a = output position in the KxK window, b = input position), h = ceil(H/s).

For window (i, j) and head n: `P[a, b] = softmax_b(scale * logits[a, b])`, `O[a] = sum_b P[a, b] * V[b]`, and
`O[a]` lands on pixel (i*s - pad + a // K, j*s - pad + a % K). Each softmax row (window, a) feeds exactly one
pixel, so the forward is a *gather* per output pixel over the <= ceil(K/s)^2 windows that cover it: no fold, no
atomics. It also stores the row's log-sum-exp `lse (B, h, w, nh, K*K)` (fp32, 1/K^2 of the logits' size) so the
backward recomputes `P` from the logits instead of saving it.

Backward, two kernels:
- `dlogits` per window: `dP[a, b] = dO[a] . V[b]`, `dL = scale * P * (dP - sum_b P * dP)`; the window's K*K values
  `V` are loaded once as a (BLOCK_W, K*K, D) tile.
- `dv` per pixel, a gather again: `dV[pix] = sum over windows w covering pix (as position b) of sum_a P[a, b] dO[a]`.

Pixels are launched per stride-parity class (y % s, x % s), so the windows that cover a pixel are known at compile
time and no work is spent on the (K*K - ceil(K/s)^2) impossible ones. Under `no_grad` (eval) the forward is a
second op, `volo::outlook_attention_infer`, that writes no log-sum-exp. Everything accumulates in fp32; fp32, bf16
and fp16 inputs; any H, W, head count and head_dim. The ops are `torch.library.triton_op`s, so `torch.compile`
traces through them without graph breaks. Importing this module makes no CUDA call; `volo.models.outlook_attention`
registers it as the backend `triton`, chosen automatically for CUDA tensors. With `TRITON_INTERPRET=1` (set before
importing triton) the same kernels run on CPU tensors, which is how the CPU test-suite checks their logic.
"""

from __future__ import annotations

import math

import torch
import triton

from volo.models.outlook_triton_kernels import (
    outlook_bwd_logits_kernel,
    outlook_bwd_v_kernel,
    outlook_fwd_kernel,
)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PIXEL_BLOCK = 32
_WINDOW_TILE_ELEMENTS = 8192  # BLOCK_W * KK_MAIN * BLOCK_D of the dlogits kernel's V tile
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65_535
"""CUDA's grid limits: axis 0 carries batch * heads (a D5 eval batch of 5,462 images has 65,544 (image, head)
pairs, over the limit of axes 1 and 2), axis 1 the pixel or window blocks of one image."""
POISON_OUTPUTS = False
"""Tests set this: outputs are then allocated filled with NaN, so an element a kernel fails to write shows up."""


def _new(shape: torch.Size | tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    dtype = dtype or like.dtype
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _launcher(kernel):
    """`wrap_triton(kernel)` so torch.compile sees the launch; the plain kernel under Triton's interpreter."""
    try:
        return torch.library.wrap_triton(kernel)
    except (RuntimeError, TypeError, AssertionError):
        return kernel


_LAUNCH_FWD, _LAUNCH_BWD_LOGITS, _LAUNCH_BWD_V = (
    _launcher(k) for k in (outlook_fwd_kernel, outlook_bwd_logits_kernel, outlook_bwd_v_kernel)
)


def _block_d(head_dim: int) -> int:
    return triton.next_power_of_2(head_dim)


def launch_grid(batch_heads: int, items: int, block: int) -> tuple[int, int]:
    """(batch * heads, blocks of `block` items): the programs of one launch, within CUDA's limits."""
    grid = (batch_heads, triton.cdiv(items, block))
    if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ:
        raise ValueError(f"outlook attention: {grid} programs exceed CUDA's grid limits; use a smaller batch/image.")
    return grid


def parity_classes(H: int, W: int, kernel_size: int, padding: int, stride: int):
    """(py, px, pixels of the class, windows covering each of its pixels) per stride-parity class.

    Classes whose pixels read 4+ windows (the (1, 1) class of K=3, s=2: 4 softmax rows per pixel) hold the most
    registers; they launch with 8 warps, the others with 4."""
    for py in range(min(stride, H)):
        for px in range(min(stride, W)):
            count = math.ceil((H - py) / stride) * math.ceil((W - px) / stride)
            rows = sum((py + padding - k) % stride == 0 for k in range(kernel_size))
            cols = sum((px + padding - k) % stride == 0 for k in range(kernel_size))
            yield py, px, count, rows * cols


def _warps(windows: int) -> int:
    return 8 if windows >= 4 else 4


def kk_main(kernel_size: int) -> int:
    """Window positions in the dlogits kernel's V tile: the largest power of two <= K*K (8 for K=3)."""
    return 1 << ((kernel_size * kernel_size).bit_length() - 1)


def _launch_fwd(v_bhwc, logits, out, lse, num_heads, kernel_size, padding, stride, scale, write_lse) -> None:
    B, H, W, C = v_bhwc.shape
    h, w = logits.shape[1], logits.shape[2]
    for py, px, count, windows in parity_classes(H, W, kernel_size, padding, stride):
        _LAUNCH_FWD[launch_grid(B * num_heads, count, _PIXEL_BLOCK)](
            v_bhwc, logits, out, lse, H, W, h, w, num_heads, scale,
            C=C, D=C // num_heads, K=kernel_size, PAD=padding, S=stride, PY=py, PX=px,
            BLOCK_P=_PIXEL_BLOCK, BLOCK_D=_block_d(C // num_heads), WRITE_LSE=write_lse, num_warps=_warps(windows),
        )  # fmt: skip


@torch.library.triton_op("volo::outlook_attention_fwd", mutates_args=())
def outlook_attention_fwd(
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    num_heads: int,
    kernel_size: int,
    padding: int,
    stride: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out (B, H, W, C) in v's dtype, lse (B, h, w, nh, K*K) fp32)."""
    B = v_bhwc.shape[0]
    h, w = logits.shape[1], logits.shape[2]
    out = _new(v_bhwc.shape, v_bhwc)
    lse = _new((B, h, w, num_heads, kernel_size * kernel_size), v_bhwc, torch.float32)
    _launch_fwd(v_bhwc, logits, out, lse, num_heads, kernel_size, padding, stride, scale, True)
    return out, lse


@torch.library.triton_op("volo::outlook_attention_infer", mutates_args=())
def outlook_attention_infer(
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    num_heads: int,
    kernel_size: int,
    padding: int,
    stride: int,
    scale: float,
) -> torch.Tensor:
    """The forward without a backward to serve (no_grad / eval): out only, no log-sum-exp written."""
    out = _new(v_bhwc.shape, v_bhwc)
    unused_lse = torch.empty(1, device=v_bhwc.device, dtype=torch.float32)  # WRITE_LSE=False: never written
    _launch_fwd(v_bhwc, logits, out, unused_lse, num_heads, kernel_size, padding, stride, scale, False)
    return out


def _launch_bwd(grad_out, v_bhwc, logits, lse, grad_v, grad_logits, num_heads, kernel_size, padding, stride, scale):
    B, H, W, C = v_bhwc.shape
    h, w = logits.shape[1], logits.shape[2]
    block_d = _block_d(C // num_heads)
    main = kk_main(kernel_size)
    block_w = max(1, min(64, _WINDOW_TILE_ELEMENTS // (main * block_d)))
    _LAUNCH_BWD_LOGITS[launch_grid(B * num_heads, h * w, block_w)](
        grad_out, v_bhwc, logits, lse, grad_logits, H, W, h, w, num_heads, scale,
        C=C, D=C // num_heads, K=kernel_size, PAD=padding, S=stride, BLOCK_W=block_w, BLOCK_D=block_d, KK_MAIN=main,
    )  # fmt: skip
    for py, px, count, windows in parity_classes(H, W, kernel_size, padding, stride):
        _LAUNCH_BWD_V[launch_grid(B * num_heads, count, _PIXEL_BLOCK)](
            grad_out, logits, lse, grad_v, H, W, h, w, num_heads, scale,
            C=C, D=C // num_heads, K=kernel_size, PAD=padding, S=stride, PY=py, PX=px,
            BLOCK_P=_PIXEL_BLOCK, BLOCK_D=block_d, num_warps=_warps(windows),
        )  # fmt: skip


@torch.library.triton_op("volo::outlook_attention_bwd", mutates_args=())
def outlook_attention_bwd(
    grad_out: torch.Tensor,
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
    kernel_size: int,
    padding: int,
    stride: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (grad_v (B, H, W, C), grad_logits (B, h, w, nh*K^4)) in the inputs' dtypes."""
    grad_v = _new(v_bhwc.shape, v_bhwc)
    grad_logits = _new(logits.shape, logits)
    _launch_bwd(grad_out, v_bhwc, logits, lse, grad_v, grad_logits, num_heads, kernel_size, padding, stride, scale)
    return grad_v, grad_logits


def _setup_context(ctx, inputs, output) -> None:
    v_bhwc, logits, num_heads, kernel_size, padding, stride, scale = inputs
    _, lse = output
    ctx.save_for_backward(v_bhwc, logits, lse)
    ctx.params = (num_heads, kernel_size, padding, stride, scale)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: torch.Tensor, _grad_lse: torch.Tensor | None):
    v_bhwc, logits, lse = ctx.saved_tensors
    grad_v, grad_logits = outlook_attention_bwd(grad_out.contiguous(), v_bhwc, logits, lse, *ctx.params)
    return grad_v, grad_logits, None, None, None, None, None


torch.library.register_autograd("volo::outlook_attention_fwd", _backward, setup_context=_setup_context)


def outlook_attention_triton(
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    num_heads: int,
    kernel_size: int = 3,
    padding: int = 1,
    stride: int = 2,
    scale: float = 1.0,
) -> torch.Tensor:
    """Outlook attention with the fused kernels; same signature and numbers as `outlook_attention_reference`.

    v_bhwc (B, H, W, C), logits (B, ceil(H/s), ceil(W/s), nh*K^4) -> (B, H, W, C); both inputs the same dtype.
    """
    if logits.dtype != v_bhwc.dtype:
        logits = logits.to(v_bhwc.dtype)
    v_bhwc, logits = _aligned(v_bhwc), _aligned(logits)
    args = (num_heads, kernel_size, padding, stride, float(scale))
    if torch.is_grad_enabled() and (v_bhwc.requires_grad or logits.requires_grad):
        return outlook_attention_fwd(v_bhwc, logits, *args)[0]
    return outlook_attention_infer(v_bhwc, logits, *args)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous, and 16-byte aligned: Triton specialises on pointer alignment, and the kernels compiled for an
    unaligned pointer (a view at an odd offset) lose vector loads and spill (forward, K=3: 128 registers + a
    2.5 KB stack instead of 223 registers and none). Under torch.compile the buffers are inductor's (aligned)."""
    t = t.contiguous()
    if not torch.compiler.is_compiling() and t.data_ptr() % 16:
        t = t.clone()
    return t


def supports(v_bhwc: torch.Tensor) -> bool:
    """The fused kernels run on CUDA tensors of a supported float dtype."""
    return v_bhwc.is_cuda and v_bhwc.dtype in SUPPORTED_DTYPES
