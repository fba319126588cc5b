"""timm's feature-extraction API for VOLO: `create_model(..., features_only=True, out_indices=...)`.

VOLO has four feature levels (see `Volo.feature_info`):

    level 0: outlooker stage      stride 8    C0 channels (192 for D1, 256 D2/D3, 384 D4/D5)
    level 1..3: transformer stages stride 16  C channels  (384 D1, 512 D2/D3, 768 D4/D5)

There is no stride 4 or stride 32 level; a segmentation or detection head takes level 0 (stride 8) and level 3
(stride 16) and upsamples/downsamples from there. The default `out_indices` is all four levels.
"""

from __future__ import annotations

import torch
from torch import nn

from volo.errors import VoloError

FEATURE_LEVELS = 4
"""Levels of `forward_intermediates`: the outlooker stage and the three transformer stages."""


def feature_take_indices(levels: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """timm's rule: None -> all levels, an int n -> the last n, a sequence -> those (negative from the end)."""
    if indices is None:
        indices = levels
    if isinstance(indices, int):
        if not 0 < indices <= levels:
            raise VoloError(f"out_indices={indices} (the last n levels) must be 1..{levels}; VOLO has {levels} levels.")
        return [levels - indices + i for i in range(indices)]
    take = []
    for i in indices:
        idx = levels + i if i < 0 else i
        if not 0 <= idx < levels:
            raise VoloError(f"Feature level {i} does not exist; VOLO has levels 0 (stride 8) and 1, 2, 3 (stride 16).")
        take.append(idx)
    return take


class FeatureInfo:
    """timm's `FeatureInfo` over the levels taken: `channels()`, `reduction()`, `module_name()`, `get_dicts()`."""

    def __init__(self, info: list[dict], out_indices: list[int]):
        self.info, self.out_indices = [dict(d) for d in info], list(out_indices)

    def _get(self, key: str, idx: int | None = None):
        if idx is not None:
            return self.info[idx][key]
        return [self.info[i][key] for i in self.out_indices]

    def channels(self, idx: int | None = None):
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self._get("module", idx)

    def get_dicts(self) -> list[dict]:
        return [self.info[i] for i in self.out_indices]

    def __len__(self) -> int:
        return len(self.out_indices)

    def __getitem__(self, i: int) -> dict:
        return self.info[self.out_indices[i]]


class VoloFeatures(nn.Module):
    """A VOLO network that returns its feature maps (NCHW, one per `out_indices` level) instead of logits."""

    def __init__(self, model: nn.Module, out_indices: int | list[int] | tuple[int, ...] | None = None, norm=False):
        super().__init__()
        info = model.feature_info
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)
        self.feature_info = FeatureInfo(info, self.out_indices)
        self.pretrained_cfg = model.pretrained_cfg
        self.model, self.norm = model, norm

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def forward(self, x_bchw: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x_bchw, self.out_indices, norm=self.norm, intermediates_only=True)
