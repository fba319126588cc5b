"""The batch contract every data path returns (PyTorch loader, DALI, nvJPEG): images plus what the targets need.

Token-label maps stay in their stored, whole-image form; the geometric transform each image went through travels
with it as one affine matrix, so the per-token targets are built later, batched on the training device
(`volo.data.targets`). Coordinates are normalised to [-1, 1] with align_corners=False, x to the right, y down
(the convention of `F.affine_grid`): `label_transform[i] @ [x_out, y_out, 1]` is the point of the whole original
image (and of its label map, which covers the whole image) that output pixel (x_out, y_out) shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    images: torch.Tensor
    """(B, 3, H, W) float, normalised with the model's mean/std."""
    labels: torch.Tensor
    """(B,) int64 image-level class index."""
    label_transform: torch.Tensor
    """(B, 2, 3) float32 affine: output-image coords -> original-image coords (see module doc)."""
    label_values: torch.Tensor | None = None
    """(B, k, h, w) float16 teacher top-k logits per location of the whole image; None without a label store."""
    label_ids: torch.Tensor | None = None
    """(B, k, h, w) int64 class ids of `label_values`."""

    def __len__(self) -> int:
        return self.images.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the batch holds (the label fields when present)."""
        return [getattr(self, f.name) for f in fields(self) if self._is_tensor(f.name)]

    def _is_tensor(self, name: str) -> bool:
        return isinstance(getattr(self, name), torch.Tensor)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A batch with `fn` applied to every tensor field (None fields stay None)."""
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self) if self._is_tensor(f.name)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self.map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) on custom batch types."""
        return self.map_tensors(torch.Tensor.pin_memory)

    @property
    def has_token_labels(self) -> bool:
        return self.label_values is not None


def identity_transforms(batch_size: int) -> torch.Tensor:
    """(B, 2, 3) identity affines: the output shows the whole original image."""
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return eye.expand(batch_size, 2, 3).clone()
