"""The token-label record (`TokenLabel`) and the interface every label store offers (`LabelSource`).

A label source maps an image key (its path relative to the ImageFolder root, POSIX form, e.g.
`n01440764/n01440764_10026.JPEG`) to a `TokenLabel`: the teacher's top-k logits and class ids at every location
of an h x w map covering the whole image (cell (r, c) covers rows [r/h, (r+1)/h) and columns [c/w, (c+1)/w) of
the image, as fractions of its height and width). The stores (`store.py`, `public.py`) import this module;
`source.py` picks one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


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
