"""Reader for the public TokenLabeling layout: `<root>/<wnid>/<image stem>.pt`, one file per image.

Each file holds an fp16 tensor [2, k, h, w]: [0] the teacher's top-k logits, [1] their class ids (stored as
floats; exact up to 2048). The released NFNet-F6 labels use k=5, h=w=18, ImageNet-1k class ids in sorted-wnid
order. Those maps were made by the original code on the central crop of each image, while training treats them as
covering the whole image (see docs/token_labeling.md); we read them as covering the whole image, like the original.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch

from volo.errors import VoloError
from volo.labeling.token_label import TokenLabel
from volo.safe_load import safe_torch_load


def public_key(image_key: str) -> str:
    """`wnid/name.JPEG` -> `wnid/name`: the .pt file's path without suffix."""
    p = PurePosixPath(image_key)
    return str(p.with_suffix(""))


class PublicLabelStore:
    def __init__(self, root: str | Path, num_classes: int | None = None):
        self.root = Path(root)
        self.num_classes = num_classes
        self._stems: set[str] | None = None
        first = next(iter(sorted(self.root.glob("*/*.pt"))), None)
        if first is None:
            raise VoloError(f"{self.root} holds no <class>/<image>.pt token-label files.")
        probe = self._load(first)
        self.topk = int(probe.shape[1])
        self.map_size = (int(probe.shape[2]), int(probe.shape[3]))

    def _load(self, path: Path) -> torch.Tensor:
        t = safe_torch_load(path, "the token-label file is damaged: regenerate or re-download it.")
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise VoloError(f"Token-label file {path} holds {shape}; the public layout is a [2, k, h, w] tensor.")
        return t

    def _all_stems(self) -> set[str]:
        if self._stems is None:
            self._stems = {str(p.relative_to(self.root).with_suffix("").as_posix()) for p in self.root.glob("*/*.pt")}
        return self._stems

    def __contains__(self, key: str) -> bool:
        return public_key(key) in self._all_stems()

    def keys(self) -> set[str]:
        return set(self._all_stems())

    def unreadable(self) -> set[str]:
        return set()

    def get(self, key: str) -> TokenLabel:
        t = self._load(self.root / f"{public_key(key)}.pt")
        if tuple(t.shape[1:]) != (self.topk, *self.map_size):
            raise VoloError(
                f"Token-label file for {key!r} has shape {tuple(t.shape)}; the others are "
                f"[2, {self.topk}, {self.map_size[0]}, {self.map_size[1]}]."
            )
        values = t[0].to(torch.float16).numpy()
        ids = t[1].float().round().to(torch.int16).numpy()
        return TokenLabel(values, np.ascontiguousarray(ids))
