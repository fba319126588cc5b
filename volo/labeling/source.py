"""Open a token-label store: our sharded store (`store.py`) or the public TokenLabeling `.pt` layout (`public.py`).

Both are a `LabelSource` (`volo.labeling.token_label`, re-exported here): image key -> `TokenLabel`.
"""

from __future__ import annotations

from pathlib import Path

from volo.errors import VoloError
from volo.labeling.public import RELEASED_CROP_PCT, PublicLabelStore
from volo.labeling.store import MANIFEST, ShardedLabelStore
from volo.labeling.token_label import LabelSource, TokenLabel

__all__ = ["LabelSource", "TokenLabel", "open_label_store"]


def open_label_store(
    path: str | Path, public_crop_pct: float | None = RELEASED_CROP_PCT, classes: list[str] | None = None
) -> LabelSource:
    """Open `path` as a sharded store (it has a manifest.json) or as the public `<wnid>/<stem>.pt` layout (its maps
    covering the centre crop `public_crop_pct`; ImageNet ids mapped onto `classes` when given, see public.py)."""
    root = Path(path)
    if not root.is_dir():
        raise VoloError(f"Token-label store {root} does not exist; create it with `volo label` or fix the path.")
    if (root / MANIFEST).is_file():
        return ShardedLabelStore(root)
    if any(root.glob("*/*.pt")):
        return PublicLabelStore(root, crop_pct=public_crop_pct, classes=classes)
    raise VoloError(
        f"{root} is not a token-label store: it has no {MANIFEST} (a `volo label` store) and no <class>/<image>.pt "
        "files (the public TokenLabeling layout); an unfinished `volo label` run writes the manifest when it ends."
    )
