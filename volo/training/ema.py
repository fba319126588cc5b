"""Exponential moving average of the model weights (buffers copied), updated after each optimiser step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """`ema = decay * ema + (1 - decay) * weights`, kept in float32 on the model's device."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self._ema_params, self._ema_buffers = list(self.module.parameters()), list(self.module.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self._ema_params, list(model.parameters()), 1.0 - self.decay)
        torch._foreach_copy_(self._ema_buffers, list(model.buffers()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(sd)
