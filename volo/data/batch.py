"""The batch contract every data path returns (PyTorch loader, DALI, nvJPEG): images plus what the targets need.

Token-label maps stay in their stored, whole-image form; the geometric transform each image went through travels
with it as one affine matrix, so the per-token targets are built later, batched on the training device
(`volo.data.targets`). Coordinates are normalised to [-1, 1] with align_corners=False, x to the right, y down
(the convention of `F.affine_grid`): `label_transform[i] @ [x_out, y_out, 1]` is the point of the whole original
image (and of its label map, which covers the whole image) that output pixel (x_out, y_out) shows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) on custom batch types."""
        return Batch(
            **{
                f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    @property
    def has_token_labels(self) -> bool:
        return self.label_values is not None


def identity_transforms(batch_size: int) -> torch.Tensor:
    """(B, 2, 3) identity affines: the output shows the whole original image."""
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return eye.expand(batch_size, 2, 3).clone()
