"""Using trained weights: load any VOLO weights file, evaluate it on an ImageFolder, predict single images.

Works on our exports (`weights/*.safetensors` + `.json` with class names), our training checkpoints (`.pt`) and
released checkpoints (`.pth.tar`, timm's): the architecture is read from the tensor shapes
(`create_model('auto', checkpoint=...)`), eval settings (crop_pct, interpolation, mean/std) from the variant table.
Class names: those saved beside our weights, else ImageNet's (from timm's tables when installed) for 1000 classes,
else the class index.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.models.fuse import fuse_for_inference
from volo.models.registry import create_model
from volo.models.variants import EvalConfig, eval_config_of
from volo.models.weights import read_weights_meta
from volo.training.evaluate import EvalResult, evaluate
from volo.training.speed import speed_settings


@dataclass
class LoadedModel:
    model: nn.Module
    """In eval mode, on the requested device."""
    eval_cfg: EvalConfig
    """crop_pct / interpolation / mean / std used for evaluation and prediction."""
    class_names: list[str]
    """Index -> name (folder name, ImageNet label, or the index as text)."""
    class_ids: list[str] | None
    """Index -> dataset folder name / ImageNet wnid when known (used to match evaluation folders)."""


def imagenet_classes() -> tuple[list[str], list[str]] | None:
    """(wnids, readable names) of ImageNet-1k in index order, from timm's bundled tables; None without timm."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    info = ImageNetInfo()
    wnids = [info.index_to_label_name(i) for i in range(1000)]
    return wnids, [info.index_to_description(i) for i in range(1000)]


def load_model(
    checkpoint: str | Path, device: torch.device, img_size: int | None = None, crop_pct: float | None = None
) -> LoadedModel:
    """The model a weights file holds (at `img_size`, default its own), ready for evaluation."""
    model = create_model("auto", img_size=img_size, checkpoint=checkpoint)  # the file's own class count
    model = fuse_for_inference(model.to(device).eval())  # stem BatchNorms folded into the convolutions
    cfg = eval_config_of(model.arch)  # the one table: the same as model.pretrained_cfg and in-run evaluation
    if crop_pct is not None:
        cfg = EvalConfig(crop_pct, cfg.interpolation, cfg.mean, cfg.std)
    k = model.arch.num_classes
    meta = read_weights_meta(checkpoint) or {}
    if isinstance(meta.get("classes"), list) and len(meta["classes"]) == k:
        return LoadedModel(model, cfg, list(meta["classes"]), list(meta["classes"]))
    if k == 1000 and (imnet := imagenet_classes()) is not None:
        return LoadedModel(model, cfg, imnet[1], imnet[0])
    return LoadedModel(model, cfg, [str(i) for i in range(k)], None)


def label_map(folder_classes: list[str], loaded: LoadedModel) -> torch.Tensor:
    """(C_folder,) int64: dataset folder index -> model class index."""
    k = len(loaded.class_names)
    if loaded.class_ids is not None and all(c in loaded.class_ids for c in folder_classes):
        index = {c: i for i, c in enumerate(loaded.class_ids)}
        return torch.tensor([index[c] for c in folder_classes])
    if len(folder_classes) == k:
        if loaded.class_ids is not None:  # names known and different: index matching may well be wrong
            warnings.warn(
                f"The evaluation folder's class names ({', '.join(folder_classes[:3])}...) differ from the model's "
                f"({', '.join(loaded.class_ids[:3])}...); matching classes by index. If that is wrong, name the "
                "folders as the model's classes (weights/*.json 'classes', or ImageNet wnids).",
                stacklevel=2,
            )
        return torch.arange(k)
    raise VoloError(
        f"The evaluation folder has {len(folder_classes)} classes ({', '.join(folder_classes[:3])}...) that do not "
        f"match the model's {k} classes by name; evaluate on a folder with the classes the model was trained on."
    )


class _Remapped:
    """Batches with folder labels translated to model class indices."""

    def __init__(self, loader, mapping: torch.Tensor):
        self.loader, self.mapping = loader, mapping

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            mapping = self.mapping.to(batch.labels.device)  # DALI's labels may be on the GPU
            # unreadable images (label -1) stay -1: never mapped onto the last class
            batch.labels = torch.where(batch.labels >= 0, mapping[batch.labels.clamp(min=0)], batch.labels)
            yield batch


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    dist: DistInfo,
    batch_size: int = 64,
    workers: int = 4,
    img_size: int | None = None,
    crop_pct: float | None = None,
    max_images: int | None = None,
    compile: bool = False,
    loader: str = "pytorch",
    confusion: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Top-1/top-5 of a weights file on an ImageFolder (`data/val` if it exists, else `data`), sharded by rank;
    `compile` wraps the (BatchNorm-folded) model in torch.compile; `loader` is "pytorch" (PIL workers) or "dali"
    (`volo.data.dali_eval`, decoding on this rank's GPU, or on the CPU in CPU runs)."""
    from volo.training.data import build_eval_loader

    if loader == "dali":  # before the model loads: say at once when DALI is missing
        from volo.data.dali_eval import require_dali_for_eval

        require_dali_for_eval()
    loaded = load_model(checkpoint, dist.device, img_size, crop_pct)
    root = Path(data)
    if not root.is_dir():
        raise VoloError(f"Evaluation folder {root} does not exist; pass --data DIR (an ImageFolder or its parent).")
    if (root / "val").is_dir():
        root = root / "val"
    size = loaded.model.arch.img_size
    device = str(dist.device) if dist.device.type == "cuda" else None
    batches, classes = build_eval_loader(
        root, size, loaded.eval_cfg.crop_pct, loaded.eval_cfg, batch_size, workers, dist, max_images, loader, device
    )
    amp = torch.bfloat16 if dist.device.type == "cuda" else None
    model = torch.compile(loaded.model) if compile else loaded.model
    with speed_settings(deterministic=False):  # cuDNN autotuning for the stem, TF32; restored after
        remapped = _Remapped(batches, label_map(classes, loaded))
        res = evaluate(model, remapped, dist.device, amp, confusion=confusion, progress=progress and dist.is_main)
    res.class_names = loaded.class_names
    if res.unreadable:
        warnings.warn(
            f"{res.unreadable} of {res.images + res.unreadable} images under {root} could not be decoded "
            f"and were not scored: top-1/top-5 are over the {res.images} readable ones.",
            stacklevel=2,
        )
    return res


@dataclass
class Prediction:
    image: Path
    top: list[tuple[int, str, float]]
    """(class index, name, probability) best first."""


@torch.no_grad()
def predict_images(
    checkpoint: str | Path, images: list[str | Path], device: torch.device, topk: int = 5
) -> list[Prediction]:
    """Top-k classes of each image (eval transform of the model: resize, centre crop, normalise)."""
    from volo.data.decode import load_rgb
    from volo.data.transforms import EvalTransform

    loaded = load_model(checkpoint, device)
    ev = loaded.eval_cfg
    transform = EvalTransform(loaded.model.arch.img_size, ev.crop_pct, ev.interpolation, ev.mean, ev.std)
    out = []
    for path in map(Path, images):
        if not path.is_file():
            raise VoloError(f"Image {path} does not exist; pass paths of image files.")
        try:
            x = transform(load_rgb(path)).image[None].to(device)
        except OSError as err:  # load_rgb turns every decode failure and bound (bombs, strips) into an OSError
            raise VoloError(f"Image {path} cannot be used ({err}); pass a JPEG/PNG photo.") from None
        probs = loaded.model(x).float().softmax(dim=-1)[0]
        p, idx = probs.topk(min(topk, probs.numel()))
        out.append(Prediction(path, [(int(i), loaded.class_names[int(i)], float(v)) for v, i in zip(p, idx)]))
    return out
