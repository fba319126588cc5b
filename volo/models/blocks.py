"""The building blocks of VOLO: stem, outlooker, transformer and class-attention blocks.

All stage tensors are channels-last `(B, H, W, C)`; class-attention blocks work on token lists `(B, N, C)`.
Parameter names match the released checkpoints (see `shared/docs/volo-reference.md`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from volo.models.outlook_attention import available_backends, outlook_attention, pool_windows


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability `p` (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Conv stem (7x7 s2 + two 3x3, each with BN and ReLU) then a 4x4 s4 projection: total stride 8."""

    def __init__(self, in_chans: int, hidden: int, embed_dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(hidden, embed_dim, 4, stride=4)

    def forward(self, x_bchw: torch.Tensor) -> torch.Tensor:
        # Channels-last convolutions: faster in oneDNN and cuDNN (tensor cores), and the final permute to
        # (B, H/8, W/8, C) is then free: the result is already contiguous, so the LayerNorm that follows needs no copy.
        x = x_bchw.contiguous(memory_format=torch.channels_last)
        return self.proj(self.conv(x)).permute(0, 2, 3, 1)  # B, H/8, W/8, C, contiguous


class OutlookAttention(nn.Module):
    """Outlook attention's parameters; the operation itself is `outlook_attention` (reference or fused)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, stride: int = 2, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.stride = stride
        self.scale = (dim // num_heads) ** -0.5
        self.v = nn.Linear(dim, dim, bias=False)
        self.attn = nn.Linear(dim, kernel_size**4 * num_heads)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Register the optional fused backends now, at construction, not during the first (maybe compiled)
        # forward: otherwise torch.compile guards on the "loaded" flag and compiles the model twice.
        available_backends()

    def forward(self, x_bhwc: torch.Tensor) -> torch.Tensor:
        v = self.v(x_bhwc)
        logits = self.attn(pool_windows(x_bhwc, self.stride))  # B, h, w, nh*K^4
        out = outlook_attention(v, logits, self.num_heads, self.kernel_size, self.padding, self.stride, self.scale)
        return self.proj_drop(self.proj(out))


class PreNormBlock(nn.Module):
    """`x += drop_path(attn(norm1(x))); x += drop_path(mlp(norm2(x)))` around a token mixer `attn`."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Outlooker(PreNormBlock):
    """Stage-1 block: outlook attention then the MLP, on a (B, H, W, C) map."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        kernel_size: int = 3,
        stride: int = 2,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__(dim, OutlookAttention(dim, num_heads, kernel_size, stride, drop), mlp_ratio, drop, drop_path)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W tokens of a channels-last map."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.drop = drop
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x_bhwc: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x_bhwc.shape
        qkv = self.qkv(x_bhwc).reshape(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(x))


class Transformer(PreNormBlock):
    """Later-stage block: multi-head self-attention then the MLP, on a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__(dim, Attention(dim, num_heads, drop), mlp_ratio, drop, drop_path)


class ClassAttention(nn.Module):
    """CaiT class attention: the class token (token 0) queries all tokens."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.drop = drop
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x_bnc: torch.Tensor) -> torch.Tensor:
        B, N, C = x_bnc.shape
        head_dim = C // self.num_heads
        kv = self.kv(x_bnc).reshape(B, N, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q = self.q(x_bnc[:, :1]).reshape(B, 1, self.num_heads, head_dim).transpose(1, 2)
        cls = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop if self.training else 0.0)
        return self.proj_drop(self.proj(cls.transpose(1, 2).reshape(B, 1, C)))


class ClassBlock(nn.Module):
    """Updates only the class token: `cls += attn(norm1(all)); cls += mlp(norm2(cls))`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x_bnc: torch.Tensor) -> torch.Tensor:
        cls = x_bnc[:, :1] + self.attn(self.norm1(x_bnc))
        cls = cls + self.mlp(self.norm2(cls))
        return torch.cat([cls, x_bnc[:, 1:]], dim=1)


class Downsample(nn.Module):
    """2x2 stride-2 conv between the outlooker stage and the transformer stages."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 2, stride=2)

    def forward(self, x_bhwc: torch.Tensor) -> torch.Tensor:
        return self.proj(x_bhwc.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
