"""Inference-only rewrites of a trained model: the same outputs from fewer kernels.

`fuse_for_inference(model)` folds each eval-mode BatchNorm of the conv stem into the convolution before it
(w' = w * g / sqrt(var + eps), b' = beta + (b - mean) * g / sqrt(var + eps)), which removes three full-resolution
read/write passes over the stem's activations per image. The reference is the unfused model: the parity test
(`tests/test_fuse.py`) holds the two to 1e-5. The fused model has no BatchNorm keys any more, so it is for
evaluation and prediction only: never train it or save its state_dict as a VOLO checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from volo.errors import VoloError
from volo.models.blocks import PatchEmbed


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to `bn(conv(x))` with `bn` in eval mode (its running statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
    return fused


def _fuse_sequential(seq: nn.Sequential) -> nn.Sequential:
    layers, mods, i = [], list(seq), 0
    while i < len(mods):
        if isinstance(mods[i], nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
            layers.append(fold_batchnorm(mods[i], mods[i + 1]))
            i += 2
        else:
            layers.append(mods[i])
            i += 1
    return nn.Sequential(*layers)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold the stem's BatchNorms into their convolutions, in place; `model` must be in eval mode."""
    if model.training:
        raise VoloError(
            "fuse_for_inference needs a model in eval mode (call model.eval() first); it is for inference only."
        )
    for module in model.modules():
        if isinstance(module, PatchEmbed):
            module.conv = _fuse_sequential(module.conv)
    return model
