"""Outlook attention (VOLO stage 1): the reference implementation and the one dispatch point for fast ones.

The operation, given `v` and the attention logits, both channels-last:

    v_bhwc      (B, H, W, C)            values, after the `v` linear
    logits      (B, h, w, nh*K*K*K*K)   the `attn` linear applied to the 2x2-pooled input; h = ceil(H/s)
    returns     (B, H, W, C)            before the `proj` linear

For every output window centre (i, j) on the h x w grid and head n, the K*K values of the KxK window around
(i*s, j*s) (zero padding `pad`) are mixed by a softmax(scale * logits) matrix of K*K x K*K, and the K*K results
are summed back into their pixel positions (overlapping windows add up, as `F.fold` does).

The logits come from the input mean-pooled over s x s cells (`pool_windows`: a reshape-mean where H and W are
multiples of s, whose backward is a cheap broadcast; `avg_pool2d(ceil_mode=True)`, the reference, elsewhere).

`outlook_attention(...)` picks an implementation: the reference below everywhere, a fused kernel on CUDA when
one is registered with `register_backend` (this module registers `volo.models.outlook_triton`, which imports
nothing from here). `set_backend` forces one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

OutlookFn = Callable[[torch.Tensor, torch.Tensor, int, int, int, int, float], torch.Tensor]


def outlook_attention_reference(
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    num_heads: int,
    kernel_size: int = 3,
    padding: int = 1,
    stride: int = 2,
    scale: float = 1.0,
) -> torch.Tensor:
    """Outlook attention with unfold/fold, exactly as the original VOLO code computes it."""
    B, H, W, C = v_bhwc.shape
    K2 = kernel_size * kernel_size
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    head_dim = C // num_heads
    v = v_bhwc.permute(0, 3, 1, 2)  # B, C, H, W
    # (B, C*K2, h*w) with channel index c*K2 + k -> (B, nh, h*w, K2, head_dim)
    v = F.unfold(v, kernel_size, padding=padding, stride=stride)
    v = v.reshape(B, num_heads, head_dim, K2, h * w).permute(0, 1, 4, 3, 2)
    attn = logits.reshape(B, h * w, num_heads, K2, K2).permute(0, 2, 1, 3, 4)  # B, nh, h*w, K2, K2
    attn = (attn * scale).softmax(dim=-1)
    out = (attn @ v).permute(0, 1, 4, 3, 2).reshape(B, C * K2, h * w)
    out = F.fold(out, output_size=(H, W), kernel_size=kernel_size, padding=padding, stride=stride)
    return out.permute(0, 2, 3, 1)


def pool_windows_reference(x_bhwc: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, ceil(H/s), ceil(W/s), C): mean of each s x s cell (partial cells at the border average
    what they hold), as the original VOLO code computes it."""
    return F.avg_pool2d(x_bhwc.permute(0, 3, 1, 2), stride, stride, ceil_mode=True).permute(0, 2, 3, 1)


def pool_windows(x_bhwc: torch.Tensor, stride: int) -> torch.Tensor:
    """`pool_windows_reference`'s numbers; a reshape-mean when H and W are multiples of s (every cell full)."""
    B, H, W, C = x_bhwc.shape
    if H % stride or W % stride:
        return pool_windows_reference(x_bhwc, stride)
    return x_bhwc.reshape(B, H // stride, stride, W // stride, stride, C).mean(dim=(2, 4))


_BACKENDS: dict[str, tuple[OutlookFn, Callable[[torch.Tensor], bool]]] = {
    "reference": (outlook_attention_reference, lambda t: True),
}
_FORCED: str | None = None


def register_backend(name: str, fn: OutlookFn, supports: Callable[[torch.Tensor], bool]) -> None:
    """Add a fast implementation; `supports(v)` says whether it can run on that input (device, dtype)."""
    _BACKENDS[name] = (fn, supports)


def available_backends() -> list[str]:
    _load_optional_backends()
    return list(_BACKENDS)


def set_backend(name: str | None) -> None:
    """Force one implementation everywhere (`None` restores automatic choice)."""
    _load_optional_backends()
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"Unknown outlook-attention backend {name!r}; choose one of {sorted(_BACKENDS)}.")
    global _FORCED
    _FORCED = name


_optional_loaded = False


def _load_optional_backends() -> None:
    global _optional_loaded
    if _optional_loaded:
        return
    _optional_loaded = True
    with contextlib.suppress(ImportError):  # the fused kernels, where Triton is installed (chosen for CUDA inputs)
        from volo.models.outlook_triton import outlook_attention_triton, supports

        register_backend("triton", outlook_attention_triton, supports)


def select_backend(v_bhwc: torch.Tensor) -> str:
    """The backend `outlook_attention` would use for this input."""
    _load_optional_backends()
    if _FORCED is not None:
        return _FORCED
    for name, (_, supports) in reversed(list(_BACKENDS.items())):
        if supports(v_bhwc):
            return name
    return "reference"


def outlook_attention(
    v_bhwc: torch.Tensor,
    logits: torch.Tensor,
    num_heads: int,
    kernel_size: int = 3,
    padding: int = 1,
    stride: int = 2,
    scale: float = 1.0,
) -> torch.Tensor:
    """Dispatch to the best implementation for this input; all give the reference's numbers."""
    fn, _ = _BACKENDS[select_backend(v_bhwc)]
    return fn(v_bhwc, logits, num_heads, kernel_size, padding, stride, scale)
