"""The training run's data: ImageFolder datasets, the resumable sampler, token labels and the loaders.

Builds on `volo.data` (dataset, transforms, loader, label stores); this file only wires them to a `RunConfig`.
`data.loader` picks the training path: pytorch (DataLoader + `ResumableDistributedSampler`, positioned by the
trainer from `Progress.epoch_consumed`) or dali / nvjpeg (`volo.data.backends.build_loader`, which keep their own
position: `state_dict()` goes into the checkpoint per rank). Evaluation uses the PyTorch path (`EvalTransform`,
`ShardSampler`), or with data.loader=dali the DALI eval loader (`volo.data.dali_eval`, same images and shards).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Subset

from volo.data.backends import BatchLoader, LoaderOptions
from volo.data.backends import build_loader as build_fast_loader
from volo.data.dataset import ImageFolderDataset, class_difference, spread_indices
from volo.data.loader import LoaderConfig, build_loader
from volo.data.sampler import ResumableDistributedSampler, ShardSampler
from volo.data.transforms import EvalTransform, TrainTransform, TrainTransformConfig
from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.models.registry import resolve_name
from volo.models.variants import VARIANTS, EvalConfig
from volo.training.checkpoint import Progress, TrainingCheckpoint, unpack_loader_state
from volo.training.config import RunConfig

if TYPE_CHECKING:
    from volo.data.dali_eval import DaliEvalLoader

EVAL_LOADERS = ("pytorch", "dali")


@dataclass
class TrainData:
    """Loaders of one rank."""

    train_loader: DataLoader | BatchLoader
    """Yields `Batch`es of train.batch_size images (the sampler's order, or the dali/nvjpeg loader's own)."""
    sampler: ResumableDistributedSampler | None
    """The PyTorch path's sampler; None for dali/nvjpeg (the loader keeps its position: `state_dict()`)."""
    eval_loader: DataLoader | DaliEvalLoader | None
    """This rank's shard of the validation split (DALI's with data.loader=dali); None without the split folder."""
    classes: list[str]
    """Class folder names, index = class id."""
    steps_per_epoch: int = 0
    """Optimiser steps in a full epoch."""
    epoch_length: int = 0
    """Samples used per epoch over all ranks (steps_per_epoch x global batch for dali/nvjpeg)."""
    backend: str = "pytorch"
    """`data.loader`: pytorch, dali or nvjpeg."""


def model_eval_config(name: str, img_size: int) -> EvalConfig:
    """crop_pct / interpolation / mean / std of a model name (`volo_d1`, `volo_d1_384`...) at `img_size`."""
    return VARIANTS[resolve_name(name)[0]].eval_cfg(img_size)


def split_dir(root: str | Path | None, split: str) -> Path:
    """`root/split`; a root without split folders is itself the training split (and has no validation)."""
    if root is None:
        raise VoloError("No dataset given: pass --data DIR (an ImageFolder root with train/ and val/) or data.path.")
    root = Path(root)
    if not root.is_dir():
        raise VoloError(f"Dataset folder {root} does not exist; pass --data DIR with train/ and val/ inside.")
    if (root / split).is_dir() or split != "train":
        return root / split
    warnings.warn(
        f"{root} has no {split}/ folder: training on {root} itself (its folders are the classes), with no "
        f"validation; make {root}/train and {root}/val (or --set data.train_split=... data.val_split=...).",
        stacklevel=2,
    )
    return root


def spread_subset(dataset, limit: int | None):
    """The first-class-only trap avoided: `limit` items spread evenly over the (class-sorted) dataset."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, spread_indices(len(dataset), limit))


def open_token_labels(cfg: RunConfig, dataset: ImageFolderDataset):
    """The label store of `cfg.token_labels.label_root`, checked against the dataset (None without one)."""
    if not cfg.token_labels.label_root:
        return None
    from volo.labeling.check import check_labels
    from volo.labeling.source import open_label_store

    store = open_label_store(cfg.token_labels.label_root)
    if store.num_classes is not None and store.num_classes != cfg.model.num_classes:
        raise VoloError(
            f"Token labels in {cfg.token_labels.label_root} are for {store.num_classes} classes but the model has "
            f"{cfg.model.num_classes}; label with a teacher of the same classes or fix model.num_classes."
        )
    check_labels(dataset, store)
    return store


def build_train_data(cfg: RunConfig, dist: DistInfo, global_batch: int) -> TrainData:
    """Datasets, sampler and loaders of this rank for `cfg`."""
    d, m = cfg.data, cfg.model
    ev = model_eval_config(m.name, m.img_size)
    transform = TrainTransform(
        TrainTransformConfig(
            img_size=m.img_size,
            scale=(d.scale_min, 1.0),
            hflip=d.hflip,
            auto_augment=d.rand_augment or None,
            re_prob=d.reprob,
            mean=ev.mean,
            std=ev.std,
        )
    )
    train_set = ImageFolderDataset(split_dir(d.path, d.train_split), transform)
    train_set.labels = open_token_labels(cfg, train_set)
    classes = list(train_set.classes)
    if len(classes) < 2:
        raise VoloError(
            f"The training folder {train_set.root} has {len(classes)} class ({', '.join(classes)}): a classifier "
            "needs at least 2 class folders (<data>/train/<class>/<image>); is --data one level too deep?"
        )
    if len(classes) != m.num_classes:
        raise VoloError(
            f"The training folder {train_set.root} has {len(classes)} classes but model.num_classes is "
            f"{m.num_classes}; pass --set model.num_classes={len(classes)}."
        )
    workers = 0 if cfg.train.deterministic else d.workers
    if d.loader == "pytorch":
        train_items = spread_subset(train_set, d.max_train_images)
        sampler = ResumableDistributedSampler(
            len(train_items), dist.world_size, dist.rank, global_batch, seed=cfg.train.seed, shuffle=True
        )
        train_loader = build_loader(
            train_items, LoaderConfig(batch_size=cfg.train.batch_size, num_workers=workers, drop_last=True), sampler
        )
        steps, length = sampler.steps_per_epoch, sampler.epoch_length
    else:
        sampler = None
        train_loader = build_fast_train_loader(cfg, dist, train_set.root, ev, train_set.labels)
        steps = len(train_loader) // cfg.train.accumulation
        if steps < 1:
            raise VoloError(
                f"The {d.loader} loader gives {len(train_loader)} batch(es) per rank per epoch, fewer than "
                f"train.accumulation={cfg.train.accumulation}; lower train.batch_size / accumulation or add images."
            )
        length = steps * global_batch
    eval_loader = None
    val_dir = split_dir(d.path, d.val_split)
    if not val_dir.is_dir() and train_set.root != Path(d.path):  # (a root without splits was warned about above)
        warnings.warn(
            f"{val_dir} does not exist: no validation (top-1, val loss, best weights) in this run; add it or "
            "--set data.val_split=<folder>.",
            stacklevel=2,
        )
    if val_dir.is_dir():
        crop = d.eval_crop_pct if d.eval_crop_pct is not None else ev.crop_pct
        eval_backend = "dali" if d.loader == "dali" else "pytorch"  # nvjpeg runs keep the PyTorch eval loader
        eval_loader, val_classes = build_eval_loader(
            val_dir,
            m.img_size,
            crop,
            ev,
            d.eval_batch_size,
            workers,
            dist,
            d.max_val_images,
            loader=eval_backend,
            device=loader_device(cfg, dist),
        )
        if val_classes != classes:
            raise VoloError(
                f"The validation folder {val_dir} and the training folder have different classes "
                f"({class_difference('val', val_classes, 'train', classes)}); both splits need the same class "
                "folders (an empty folder is not a class)."
            )
    return TrainData(train_loader, sampler, eval_loader, classes, steps, length, d.loader)


def loader_device(cfg: RunConfig, dist: DistInfo) -> str | None:
    """`data.loader_device`, or the run's own GPU (cuda:LOCAL_RANK) on CUDA runs; None means the CPU."""
    if cfg.data.loader_device is not None:
        return None if cfg.data.loader_device == "cpu" else cfg.data.loader_device
    return str(dist.device) if dist.device.type == "cuda" else None


def build_fast_train_loader(cfg: RunConfig, dist: DistInfo, root: Path, ev: EvalConfig, labels) -> BatchLoader:
    """The dali / nvjpeg training loader of this rank, with the PyTorch path's augmentation settings.

    `labels` is the token-label store already checked by `open_token_labels` (or None). `data.max_train_images`
    picks the same images as the PyTorch path (`spread_indices`).
    """
    d = cfg.data
    if d.loader == "dali":
        from volo.data.dali_loader import require_dali

        try:
            require_dali()
        except VoloError:
            raise VoloError(
                "data.loader=dali needs NVIDIA DALI: run `pip install nvidia-dali-cuda130` (or `pip install "
                "volo[dali]`), or set data.loader=pytorch or nvjpeg."
            ) from None
    options = LoaderOptions(
        root=root,
        img_size=cfg.model.img_size,
        batch_size=cfg.train.batch_size,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=cfg.train.seed,
        scale=(d.scale_min, 1.0),
        hflip=d.hflip,
        rand_augment=d.rand_augment,
        mean=ev.mean,
        std=ev.std,
        device=loader_device(cfg, dist),
        workers=d.workers,
        max_images=d.max_train_images,
        reprob=d.reprob,
        token_labels=labels,
    )
    return build_fast_loader(d.loader, options)


def restore_loader(
    data: TrainData, ckpt: TrainingCheckpoint, path: Path, dist: DistInfo, prog: Progress, batch_size: int
) -> None:
    """dali/nvjpeg resume: this rank's saved loader position; without one (another loader or world size wrote
    the checkpoint) nvJPEG re-shards from the global sample count and DALI finishes the epoch in a fresh order."""
    backend, loader = data.backend, data.train_loader
    if ckpt.world_size == dist.world_size and len(ckpt.loader) > dist.rank:
        state = unpack_loader_state(ckpt.loader[dist.rank])
        if state.get("backend") == backend:
            loader.load_state_dict(state)
            return
    if backend == "nvjpeg":
        loader.load_state_dict({"backend": "nvjpeg", "epoch": prog.epoch, "consumed": prog.epoch_consumed})
        return
    warnings.warn(
        f"{path} holds no DALI reader position for rank {dist.rank} of {dist.world_size} (another loader or world "
        f"size wrote it): epoch {prog.epoch} goes on for its remaining steps in a fresh DALI order.",
        stacklevel=3,
    )
    position = prog.epoch_consumed // (dist.world_size * batch_size)
    loader.load_state_dict({"backend": backend, "dali_checkpoint": None, "epoch": prog.epoch, "position": position})


def build_eval_loader(
    root: Path,
    img_size: int,
    crop_pct: float,
    ev: EvalConfig,
    batch_size: int,
    workers: int,
    dist: DistInfo,
    max_images: int | None = None,
    loader: str = "pytorch",
    device: str | None = None,
) -> tuple[DataLoader | DaliEvalLoader, list[str]]:
    """This rank's shard of an ImageFolder, resized to floor(img_size / crop_pct) and centre-cropped.

    `loader`: "pytorch" (PIL `EvalTransform` in DataLoader workers, `ShardSampler`) or "dali" (`DaliEvalLoader`,
    decoding on `device`: None = CPU, "cuda:N" = nvJPEG on GPU N). Both give every image to exactly one rank.
    """
    if loader == "dali":
        from volo.data.dali_eval import DaliEvalLoader

        dali = DaliEvalLoader(
            root,
            img_size,
            crop_pct,
            ev.interpolation,
            ev.mean,
            ev.std,
            batch_size,
            dist.rank,
            dist.world_size,
            device,
            workers,
            max_images,
        )
        return dali, dali.classes
    if loader != "pytorch":
        raise VoloError(f"Evaluation loader {loader!r} is unknown; choose one of {', '.join(EVAL_LOADERS)}.")
    transform = EvalTransform(img_size, crop_pct, ev.interpolation, ev.mean, ev.std)
    dataset = ImageFolderDataset(root, transform, substitute=False)  # unreadable: counted, never replaced
    items = spread_subset(dataset, max_images)
    sampler = ShardSampler(len(items), dist.world_size, dist.rank)
    loader = build_loader(items, LoaderConfig(batch_size=batch_size, num_workers=workers, drop_last=False), sampler)
    loader.generator = torch.Generator().manual_seed(0)  # keep the global RNG untouched by eval
    return loader, list(dataset.classes)
