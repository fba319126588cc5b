"""The check run before training: the label store must cover the dataset, with matching classes and shapes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from volo.data.dataset import ImageFolderDataset
from volo.errors import VoloError
from volo.labeling.store import ShardedLabelStore, image_fingerprint
from volo.labeling.token_label import LabelSource


@dataclass
class LabelCheck:
    images: int
    """Dataset images that have a label (after dropping those the generator could not read)."""
    dropped: int
    """Images dropped because the label generator found them unreadable."""
    map_size: tuple[int, int]
    topk: int


def check_labels(dataset: ImageFolderDataset, store: LabelSource, probe: int = 16) -> LabelCheck:
    """Raise VoloError unless every image of `dataset` has a well-formed label with the dataset's classes.

    Drops (with a warning) images the store records as unreadable. For a sharded store it also checks the
    shards' shapes, dtypes and class-id range, and that `probe` images spread over the dataset are the files the
    store was made from (size + first bytes); for the public layout it opens `probe` files spread over the dataset.
    """
    dropped = dataset.drop(store.unreadable())
    if dropped:
        warnings.warn(f"Dropped {dropped} image(s) that the label generator could not decode.", stacklevel=2)
    missing = [e.key for e in dataset.entries if e.key not in store]
    if missing:
        raise VoloError(
            f"{len(missing)} of {len(dataset.entries)} images under {dataset.root} have no token label "
            f"(e.g. {missing[0]!r}); regenerate the store with `volo label` on this dataset or fix --data."
        )
    if isinstance(store, ShardedLabelStore):
        classes = getattr(store.meta, "classes", None)
        if store.num_classes != dataset.num_classes:
            raise VoloError(
                f"The label store {store.root} was made for {store.num_classes} classes but {dataset.root} has "
                f"{dataset.num_classes} class folders; label ids would point at the wrong classes. "
                "Use the store made for this dataset (same class folders)."
            )
        if classes and list(classes) != dataset.classes:  # same count, other names or order
            i = next(i for i, (a, b) in enumerate(zip(classes, dataset.classes)) if a != b)
            raise VoloError(
                f"The label store {store.root} does not match the class folders of {dataset.root}: class {i} is "
                f"{classes[i]!r} in the label store but {dataset.classes[i]!r} in the dataset; label ids would point "
                "at the wrong classes. Use the store made for this dataset (same class folders)."
            )
        problems = store.verify(checksums=False)
        if problems:
            raise VoloError(
                f"The label store {store.root} is damaged ({len(problems)} problem(s), first: "
                f"{problems[0]}); run `volo label --verify` and regenerate it."
            )
        _check_fingerprints(dataset, store, probe)
    else:
        if store.num_classes is not None and store.num_classes != dataset.num_classes:
            raise VoloError(
                f"The label store has {store.num_classes} classes but {dataset.root} has {dataset.num_classes}."
            )
        picks = np.linspace(0, len(dataset.entries) - 1, min(probe, len(dataset.entries))).astype(int)
        for i in sorted(set(picks.tolist())):
            key = dataset.entries[i].key
            label = store.get(key)
            if int(label.ids.max()) >= dataset.num_classes or int(label.ids.min()) < 0:
                raise VoloError(
                    f"Token label of {key!r} has class id {int(label.ids.max())} but {dataset.root} has only "
                    f"{dataset.num_classes} classes; the labels were made for another class set."
                )
    return LabelCheck(len(dataset.entries), dropped, tuple(store.map_size), store.topk)


def _check_fingerprints(dataset: ImageFolderDataset, store: ShardedLabelStore, probe: int) -> None:
    """Raise VoloError when probed images differ from those labeled (a store made for another folder)."""
    picks = np.linspace(0, len(dataset.entries) - 1, min(probe, len(dataset.entries))).astype(int)
    keys = [dataset.entries[i].key for i in sorted(set(picks.tolist()))]
    changed = []
    for key in keys:
        recorded = store.fingerprint(key)
        try:
            if recorded is not None and image_fingerprint(dataset.root / key) != recorded:
                changed.append(key)
        except OSError:  # unreadable now: the dataset counts it when it is loaded
            continue
    if changed:
        raise VoloError(
            f"{len(changed)} of {len(keys)} probed images under {dataset.root} are not the files the label store "
            f"{store.root} was made from (size or first bytes differ, e.g. {changed[0]!r}); the store belongs to "
            f"another folder or version of the dataset: regenerate it with `volo label --data {dataset.root}`."
        )
