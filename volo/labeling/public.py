"""Reader for the public TokenLabeling layout: `<root>/<wnid>/<image stem>.pt`, one file per image.

Each file holds an fp16 tensor [2, k, h, w]: [0] the teacher's top-k logits, [1] their class ids (stored as
floats; exact up to 2048). The released NFNet-F6 labels use k=5, h=w=18, ImageNet-1k class ids in sorted-wnid
order.

Geometry: TokenLabeling's generate_label.py runs the teacher on timm's eval transform (resize the short side to
floor(T / crop_pct), centre-crop T x T; dm_nfnet_f6: T = 576, crop_pct 0.956), so a map covers the centred square
of side crop_pct x the short side, not the whole image (the original training code reads it as the whole image).
`crop_pct` records that square; `fold_centre_crop` folds it into a sample's `label_transform` (the PyTorch data
path does, `volo.data.dataset`), so every token samples the map where its pixels really are. crop_pct None reads
the maps as whole-image maps, as the original code did.

Classes: with `classes` (the dataset's wnid folders, e.g. Imagenette), the ImageNet-1k ids are mapped to the
dataset's class indices; entries of other classes are dropped (value 0 on a class absent from that cell, which
adds nothing, as a class outside the top-k).
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


RELEASED_CROP_PCT = 0.956
"""crop_pct the released NFNet-F6 labels were generated with (timm's dm_nfnet_f6 at its test size 576)."""


def centre_crop_side(width: int, height: int, crop_pct: float) -> float:
    """Side in pixels of the centred square a timm eval transform at crop_pct shows of a width x height image."""
    return crop_pct * min(width, height)


def fold_centre_crop(label_transform: torch.Tensor, width: int, height: int, crop_pct: float) -> torch.Tensor:
    """(2, 3) affine output -> whole-image coords, composed with whole-image -> centre-crop-map coords.

    Normalised coords (align_corners=False, [-1, 1] over the whole image): the map spans x in [-a_x, a_x],
    y in [-a_y, a_y] with a_x = side / width, a_y = side / height, so map coords are (x / a_x, y / a_y)."""
    side = centre_crop_side(width, height, crop_pct)
    out = label_transform.clone()
    out[0] *= width / side
    out[1] *= height / side
    return out


class PublicLabelStore:
    def __init__(
        self,
        root: str | Path,
        num_classes: int | None = None,
        crop_pct: float | None = RELEASED_CROP_PCT,
        classes: list[str] | None = None,
    ):
        self.root = Path(root)
        self.num_classes = num_classes
        self.crop_pct = crop_pct
        """The maps cover the centred square of side crop_pct x the short side; None: the whole image."""
        self._lookup: np.ndarray | None = None
        if classes is not None:  # ImageNet-1k id -> dataset class index, -1 for the classes the dataset lacks
            from volo.labeling.classmap import imagenet_class_map

            self._lookup = np.full(1000, -1, dtype=np.int64)
            self._lookup[imagenet_class_map(classes)] = np.arange(len(classes))
            self.num_classes = len(classes)
        self._stems: set[str] | None = None
        first = next(iter(sorted(self.root.glob("*/*.pt"))), None)
        if first is None:
            raise VoloError(f"{self.root} holds no <class>/<image>.pt token-label files.")
        probe = self._load(first)
        self.topk = int(probe.shape[1])
        self.map_size = (int(probe.shape[2]), int(probe.shape[3]))
        if self._lookup is not None and self.num_classes <= self.topk:
            raise VoloError(
                f"Mapping {self.root}'s top-{self.topk} labels onto {self.num_classes} classes needs more classes "
                "than the top-k; use the labels without a class map."
            )

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
        if self._lookup is not None:
            values, ids = self._map_classes(values, ids)
        return TokenLabel(values, np.ascontiguousarray(ids))

    def _map_classes(self, values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ImageNet ids -> dataset ids; a dropped entry becomes value 0 on the first class absent from its cell."""
        mapped = self._lookup[np.clip(ids.astype(np.int64), 0, 999)]  # (k, h, w), -1 = not a dataset class
        keep = mapped >= 0
        K = self.num_classes
        present = np.zeros((K + 1, *ids.shape[1:]), dtype=bool)
        np.put_along_axis(present, np.where(keep, mapped, K), True, axis=0)
        free = np.argmin(present[:K], axis=0)  # first class not in the cell (K > k, so there is one)
        ids_out = np.where(keep, mapped, free[None]).astype(np.int16)
        values_out = np.where(keep, values, np.float16(0)).astype(np.float16)
        return values_out, ids_out
