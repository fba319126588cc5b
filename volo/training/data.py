"""The training run's data: ImageFolder datasets, the resumable sampler, token labels and the loaders.

Builds on `volo.data` (dataset, loaders, label stores); this file only wires them to a `RunConfig`. The training
loader of every `data.loader` (pytorch, dali, nvjpeg) comes from `volo.data.backends.build_train_loader` with the
spec `train_loader_spec` makes, keeps its own position inside the epoch (`state_dict()`, saved per rank in the
checkpoint) and is put back by one resume path (`restore_loader`). Evaluation uses the PyTorch path
(`EvalTransform`, `ShardSampler`), or with data.loader=dali the DALI eval loader (`volo.data.dali_eval`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Subset

from volo.data.backends import BatchLoader, LoaderOptions, build_train_loader
from volo.data.dataset import ImageFolderDataset, class_difference, spread_indices
from volo.data.loader import LoaderConfig, build_loader
from volo.data.loader_spec import position
from volo.data.sampler import ShardSampler
from volo.data.transforms import EvalTransform
from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.models.registry import resolve_name
from volo.models.variants import VARIANTS, EvalConfig, default_eval_config
from volo.training.checkpoint import Progress, TrainingCheckpoint, unpack_loader_state
from volo.training.config import RunConfig

if TYPE_CHECKING:
    from volo.data.dali_eval import DaliEvalLoader

EVAL_LOADERS = ("pytorch", "dali")


@dataclass
class TrainData:
    """Loaders of one rank."""

    train_loader: BatchLoader
    """Yields `Batch`es of train.batch_size images; keeps its position inside the epoch (`state_dict()`)."""
    eval_loader: DataLoader | DaliEvalLoader | None
    """This rank's shard of the validation split (DALI's with data.loader=dali); None without the split folder."""
    classes: list[str]
    """Class folder names, index = class id."""
    steps_per_epoch: int = 0
    """Optimiser steps in a full epoch."""
    epoch_length: int = 0
    """Samples used per epoch over all ranks (steps_per_epoch x global batch)."""
    backend: str = "pytorch"
    """`data.loader`: pytorch, dali or nvjpeg."""


def model_eval_config(name: str, img_size: int) -> EvalConfig:
    """crop_pct / interpolation / mean / std of a model name (`volo_d1`, `volo_d1_384`...) at `img_size`; a timm
    teacher (`timm:<name>`) uses the default for its size."""
    if name.startswith("timm:"):
        return default_eval_config(img_size)
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

    t = cfg.token_labels
    classes = dataset.classes if t.class_map == "imagenet" else None
    store = open_label_store(t.label_root, t.public_crop_pct, classes)
    if store.num_classes is not None and store.num_classes != cfg.model.num_classes:
        raise VoloError(
            f"Token labels in {cfg.token_labels.label_root} are for {store.num_classes} classes but the model has "
            f"{cfg.model.num_classes}; label with a teacher of the same classes or fix model.num_classes."
        )
    check_labels(dataset, store)
    return store


def build_train_data(cfg: RunConfig, dist: DistInfo, global_batch: int) -> TrainData:
    """Datasets, token labels and loaders of this rank for `cfg`."""
    d, m = cfg.data, cfg.model
    ev = model_eval_config(m.name, m.img_size)
    train_set = ImageFolderDataset(split_dir(d.path, d.train_split), transform=None)  # the loader sets its own
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
    if d.loader == "dali":
        from volo.data.dali_loader import require_dali

        try:
            require_dali()
        except VoloError:
            raise VoloError(
                "data.loader=dali needs NVIDIA DALI: run `pip install nvidia-dali-cuda130` (or `pip install "
                "volo[dali]`), or set data.loader=pytorch or nvjpeg."
            ) from None
    train_loader = build_train_loader(train_loader_spec(cfg, dist, train_set, ev))
    steps = len(train_loader) // cfg.train.accumulation
    if steps < 1:
        raise VoloError(
            f"The {d.loader} loader gives {len(train_loader)} batch(es) per rank per epoch, fewer than "
            f"train.accumulation={cfg.train.accumulation}; lower train.batch_size / accumulation or add images."
        )
    length = steps * global_batch
    workers = 0 if cfg.train.deterministic else d.workers
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
    return TrainData(train_loader, eval_loader, classes, steps, length, d.loader)


def loader_device(cfg: RunConfig, dist: DistInfo) -> str | None:
    """`data.loader_device`, or the run's own GPU (cuda:LOCAL_RANK) on CUDA runs; None means the CPU."""
    if cfg.data.loader_device is not None:
        return None if cfg.data.loader_device == "cpu" else cfg.data.loader_device
    return str(dist.device) if dist.device.type == "cuda" else None


def train_loader_spec(cfg: RunConfig, dist: DistInfo, train_set: ImageFolderDataset, ev: EvalConfig) -> LoaderOptions:
    """The spec of this rank's training loader: `data.loader`, the model's size and normalisation, `data`'s
    augmentation. `train_set` is the training folder already scanned and checked against its label store
    (`open_token_labels`); `data.max_train_images` picks the same images on every backend (`spread_indices`)."""
    d = cfg.data
    pytorch = d.loader == "pytorch"
    return LoaderOptions(
        root=train_set.root,
        backend=d.loader,
        img_size=cfg.model.img_size,
        batch_size=cfg.train.batch_size,
        accumulation=cfg.train.accumulation,
        rank=dist.rank,
        world_size=dist.world_size,
        seed=cfg.train.seed,
        scale=(d.scale_min, 1.0),
        hflip=d.hflip,
        rand_augment=d.rand_augment,
        mean=ev.mean,
        std=ev.std,
        # pytorch decodes on the CPU and copies batches to the run's device; dali / nvjpeg decode where told
        device=str(dist.device) if pytorch else loader_device(cfg, dist),
        workers=0 if pytorch and cfg.train.deterministic else d.workers,
        max_images=d.max_train_images,
        reprob=d.reprob,
        token_labels=train_set.labels,
        dataset=train_set,
    )


def restore_loader(loader: BatchLoader, ckpt: TrainingCheckpoint, dist: DistInfo, prog: Progress) -> None:
    """The one resume path of every backend: this rank's saved position when the checkpoint has one from the same
    loader and world size, else the position `Progress` records (`loader_spec.position`: the sampler-driven
    loaders re-shard the rest of the epoch from that image count, DALI finishes it in a fresh order)."""
    if ckpt.world_size == dist.world_size and len(ckpt.loader) > dist.rank:
        state = unpack_loader_state(ckpt.loader[dist.rank])
        if state.get("backend") == loader.backend:
            loader.load_state_dict(state)
            return
    loader.load_state_dict(position(prog.epoch, prog.epoch_consumed))


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
