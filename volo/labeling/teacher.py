"""Label teachers: a network that scores every location of its final feature map, `(B, 3, T, T) -> (B, K, h, w)`.

- our VOLO: the aux head's token logits, reshaped to the token grid (h = w = T / 16);
- any timm classifier with a spatial feature map (CNNs: ResNet, NFNet, ConvNeXt, EfficientNet...): its
  `forward_features`, then its own head (`forward_head`) applied to every location as a 1 x 1 map, i.e. the
  classifier per location, as the paper did with NFNet-F6. No pretrained download: weights come from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from volo.errors import VoloError
from volo.labeling.teacher_net import create_timm, per_location_logits, timm_meta
from volo.models import create_model, list_models
from volo.models.variants import IMAGENET_MEAN, IMAGENET_STD
from volo.models.weights import read_state_dict


@dataclass
class Teacher:
    model: nn.Module
    kind: str
    """'volo' or 'timm'."""
    spec: str
    """How the user named it (recorded in the store)."""
    input_size: int
    num_classes: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @torch.inference_mode()
    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, T) normalised -> (B, K, h, w) float32 logits at every feature-map location."""
        if self.kind == "volo":
            tokens = self.model.forward_tokens(self.model.forward_stem(images))  # (B, h, w, C)
            _, token_logits = self.model.forward_head_tokens(tokens)  # (B, h*w, K)
            B, h, w, _ = tokens.shape
            return token_logits.float().reshape(B, h, w, -1).permute(0, 3, 1, 2)
        return per_location_logits(self.model, self.model.forward_features(images))


def load_teacher(
    spec: str, checkpoint: str | Path | None = None, num_classes: int = 1000, input_size: int | None = None
) -> Teacher:
    """`spec`: a VOLO checkpoint file; a VOLO name (`volo_d1`, random init unless `checkpoint`); or
    `timm:<model name>` (random init unless `checkpoint`, a state-dict file)."""
    trained = timm_meta(spec) if Path(spec).is_file() else None
    if trained is not None:  # a timm teacher from `volo train` (teacher_net.py): name, size, classes in its JSON
        spec, checkpoint = f"timm:{trained['timm']}", spec
        num_classes, input_size = trained["num_classes"], input_size or trained["img_size"]
    if spec.startswith("timm:"):
        model = create_timm(spec.removeprefix("timm:"), num_classes)
        if checkpoint is not None:
            model.load_state_dict(read_state_dict(checkpoint))
        # our own training normalises with ImageNet's mean/std (data.py); timm's file may name another
        cfg = {} if trained is not None else getattr(model, "pretrained_cfg", {}) or {}
        size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        return Teacher(model.eval(), "timm", spec, size, num_classes, mean, std)
    path = Path(spec)
    if path.is_file():
        model = create_model("auto", checkpoint=path)
    elif spec.split(".")[0] in list_models() or spec.rsplit("_", 1)[0] in list_models():
        model = create_model(spec, num_classes=num_classes, checkpoint=checkpoint)
    else:
        raise VoloError(
            f"Teacher {spec!r} is neither a checkpoint file, a VOLO model name ({', '.join(list_models())}) "
            "nor 'timm:<model>'."
        )
    size = input_size or model.arch.img_size
    if size % 16:
        raise VoloError(f"Teacher input size {size} is not a multiple of 16; VOLO needs one.")
    return Teacher(model.eval(), "volo", spec, size, model.arch.num_classes)
