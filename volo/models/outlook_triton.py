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
time and no work is spent on the (K*K - ceil(K/s)^2) impossible ones. Everything accumulates in fp32; fp32, bf16
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
_WINDOW_TILE_ELEMENTS = 8192  # BLOCK_W * KK_PAD * BLOCK_D of the dlogits kernel's V tile
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
    B, H, W, C = v_bhwc.shape
    h, w = logits.shape[1], logits.shape[2]
    KK = kernel_size * kernel_size
    out = _new(v_bhwc.shape, v_bhwc)
    lse = _new((B, h, w, num_heads, KK), v_bhwc, torch.float32)
    launch = _LAUNCH_FWD
    for py in range(min(stride, H)):
        for px in range(min(stride, W)):
            count = math.ceil((H - py) / stride) * math.ceil((W - px) / stride)
            grid = (triton.cdiv(count, _PIXEL_BLOCK), B * num_heads)
            launch[grid](
                v_bhwc,
                logits,
                out,
                lse,
                H,
                W,
                h,
                w,
                num_heads,
                scale,
                C=C,
                D=C // num_heads,
                K=kernel_size,
                PAD=padding,
                S=stride,
                PY=py,
                PX=px,
                BLOCK_P=_PIXEL_BLOCK,
                BLOCK_D=_block_d(C // num_heads),
                KK_PAD=triton.next_power_of_2(KK),
            )
    return out, lse


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
    B, H, W, C = v_bhwc.shape
    h, w = logits.shape[1], logits.shape[2]
    KK = kernel_size * kernel_size
    kk_pad = triton.next_power_of_2(KK)
    block_d = _block_d(C // num_heads)
    grad_v = _new(v_bhwc.shape, v_bhwc)
    grad_logits = _new(logits.shape, logits)
    block_w = max(1, min(64, _WINDOW_TILE_ELEMENTS // (kk_pad * block_d)))
    _LAUNCH_BWD_LOGITS[(triton.cdiv(h * w, block_w), B * num_heads)](
        grad_out,
        v_bhwc,
        logits,
        lse,
        grad_logits,
        H,
        W,
        h,
        w,
        num_heads,
        scale,
        C=C,
        D=C // num_heads,
        K=kernel_size,
        PAD=padding,
        S=stride,
        BLOCK_W=block_w,
        BLOCK_D=block_d,
        KK_PAD=kk_pad,
    )
    launch = _LAUNCH_BWD_V
    for py in range(min(stride, H)):
        for px in range(min(stride, W)):
            count = math.ceil((H - py) / stride) * math.ceil((W - px) / stride)
            launch[(triton.cdiv(count, _PIXEL_BLOCK), B * num_heads)](
                grad_out,
                logits,
                lse,
                grad_v,
                H,
                W,
                h,
                w,
                num_heads,
                scale,
                C=C,
                D=C // num_heads,
                K=kernel_size,
                PAD=padding,
                S=stride,
                PY=py,
                PX=px,
                BLOCK_P=_PIXEL_BLOCK,
                BLOCK_D=block_d,
            )
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
    out, _ = outlook_attention_fwd(
        v_bhwc.contiguous(), logits.contiguous(), num_heads, kernel_size, padding, stride, float(scale)
    )
    return out


def supports(v_bhwc: torch.Tensor) -> bool:
    """The fused kernels run on CUDA tensors of a supported float dtype."""
    return v_bhwc.is_cuda and v_bhwc.dtype in SUPPORTED_DTYPES
