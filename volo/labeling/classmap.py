"""Class mapping: label an ImageNet subset (Imagenette, any folder of wnid-named classes) with a 1000-class teacher
or the released 1000-class label files.

`map[i]` is the ImageNet-1k index (sorted-wnid order, as the released labels and timm's heads use) of the dataset's
class i. A teacher's logits are restricted to those columns before the top-k is taken, and stored ids are the
dataset's own class indices, so the student trains with `model.num_classes = len(classes)`.
"""

from __future__ import annotations

from volo.errors import VoloError


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in index order (timm's bundled table; no download)."""
    try:
        from timm.data import ImageNetInfo
    except ImportError as err:
        raise VoloError("Mapping classes to ImageNet needs timm's class table; install timm.") from err
    info = ImageNetInfo()
    return [info.index_to_label_name(i) for i in range(1000)]


def imagenet_class_map(classes: list[str]) -> list[int]:
    """Dataset class folder names (wnids such as n01440764) -> their ImageNet-1k indices."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise VoloError(
            f"Class folder(s) {unknown[:3]} are not ImageNet-1k wnids; --class-map imagenet needs folders named "
            "like n01440764 (drop the flag for a teacher trained on these classes)."
        )
    return [index[c] for c in classes]
