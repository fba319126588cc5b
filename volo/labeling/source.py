"""One interface over token-label stores: our sharded store and the public TokenLabeling `.pt` layout.

A label source maps an image key (its path relative to the ImageFolder root, POSIX form, e.g.
`n01440764/n01440764_10026.JPEG`) to a `TokenLabel`: the teacher's top-k logits and class ids at every location
of an h x w map covering the whole image (cell (r, c) covers rows [r/h, (r+1)/h) and columns [c/w, (c+1)/w) of
the image, as fractions of its height and width).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from volo.errors import VoloError


@dataclass
class TokenLabel:
    values: np.ndarray
    """(k, h, w) float16 teacher logits, best first."""
    ids: np.ndarray
    """(k, h, w) integer class ids of `values`."""


@runtime_checkable
class LabelSource(Protocol):
    num_classes: int | None
    """Classes of the teacher's head (None when the layout does not record it)."""
    topk: int
    map_size: tuple[int, int]
    """(h, w) of every map."""

    def __contains__(self, key: str) -> bool: ...

    def get(self, key: str) -> TokenLabel: ...

    def keys(self) -> set[str]: ...

    def unreadable(self) -> set[str]:
        """Images the label generator could not decode (the dataset drops them)."""
        ...


def open_label_store(path: str | Path) -> LabelSource:
    """Open `path` as a sharded store (it has a manifest.json) or as the public `<wnid>/<stem>.pt` layout."""
    from volo.labeling.public import PublicLabelStore
    from volo.labeling.store import MANIFEST, ShardedLabelStore

    root = Path(path)
    if not root.is_dir():
        raise VoloError(f"Token-label store {root} does not exist; create it with `volo label` or fix the path.")
    if (root / MANIFEST).is_file():
        return ShardedLabelStore(root)
    if any(root.glob("*/*.pt")):
        return PublicLabelStore(root)
    raise VoloError(
        f"{root} is not a token-label store: it has no {MANIFEST} (a `volo label` store) and no <class>/<image>.pt "
        "files (the public TokenLabeling layout); an unfinished `volo label` run writes the manifest when it ends."
    )
