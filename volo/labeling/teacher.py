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
        feats = self.model.forward_features(images)
        if feats.ndim != 4:
            raise VoloError(
                f"Teacher {self.spec!r} returns features of shape {tuple(feats.shape)}, not a spatial map; "
                "use a convolutional timm model (resnet, nfnet, convnext...) or a VOLO checkpoint."
            )
        nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        f = feats if nhwc else feats.permute(0, 2, 3, 1)  # (B, h, w, C)
        B, h, w, C = f.shape
        cells = f.reshape(B * h * w, 1, 1, C) if nhwc else f.reshape(B * h * w, C, 1, 1)
        logits = self.model.forward_head(cells)  # (B*h*w, K): global pooling of a 1x1 map is the identity
        return logits.float().reshape(B, h, w, -1).permute(0, 3, 1, 2)


def load_teacher(
    spec: str, checkpoint: str | Path | None = None, num_classes: int = 1000, input_size: int | None = None
) -> Teacher:
    """`spec`: a VOLO checkpoint file; a VOLO name (`volo_d1`, random init unless `checkpoint`); or
    `timm:<model name>` (random init unless `checkpoint`, a state-dict file)."""
    if spec.startswith("timm:"):
        try:
            import timm
        except ImportError as err:
            raise VoloError("Teacher 'timm:...' needs timm; install it with `pip install timm`.") from err
        name = spec.removeprefix("timm:")
        try:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        except RuntimeError as err:
            raise VoloError(f"timm does not know the model {name!r} ({err}).") from err
        if checkpoint is not None:
            model.load_state_dict(read_state_dict(checkpoint))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
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
