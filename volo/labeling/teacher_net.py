"""Any timm CNN as a teacher you train yourself: `volo train RECIPE --set model.name=timm:<name>`.

The paper's teacher is a CNN scored per location (NFNet-F6): a network trained with a globally pooled classifier
whose classifier, applied to each cell of the final feature map, gives a class-activation-style map that follows
where the object is. `TimmTeacherNet` wraps a timm model so the same training loop (recipes, schedule, DDP,
checkpoints, evaluation) trains it:

- eval mode: `net(images) -> (B, K)` logits, the model's own pooled head;
- train mode: `VoloTrainOutput(cls_logits, token_logits)`, the pooled logits and the per-location classifier
  resampled (bilinear) from the feature grid to the img/16 token grid, so the token loss has its usual shape.
  Train a teacher with `token_labels.dense_weight=0`: a dense loss on plain labels teaches every cell to say the
  image class, which is exactly the non-localising map token labeling must not get. MixToken is refused (the box
  lives on a VOLO stem).

Exported weights keep timm's own key names (`weights/final.safetensors`) with a JSON beside them
(`{"arch": {"timm": name, "img_size", "num_classes"}}`), so `volo label --teacher runs/<run>/weights/final.safetensors`
finds the model name and input size by itself, and timm can load the file directly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from volo.errors import VoloError
from volo.models.volo import VoloTrainOutput
from volo.models.weights import read_state_dict

TIMM_PREFIX = "timm:"


def is_timm_name(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


@dataclass(frozen=True)
class TimmArch:
    timm: str
    """timm model name (without the `timm:` prefix)."""
    img_size: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


def create_timm(name: str, num_classes: int, **kwargs) -> nn.Module:
    """`timm.create_model(name, pretrained=False, ...)` with one-line errors (no download ever)."""
    try:
        import timm
    except ImportError as err:
        raise VoloError("A timm teacher needs timm; install it with `pip install timm`.") from err
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except (RuntimeError, TypeError) as err:
        raise VoloError(f"timm cannot build the model {name!r} ({err}); pick a name from timm.list_models().") from err


def per_location_logits(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The classifier of `model` applied to every cell of its feature map: (B, K, h, w).

    `feats` is `model.forward_features(images)`, NCHW (or NHWC where timm says `output_fmt`). Each cell goes
    through `forward_head` as a 1 x 1 map (the global pooling of one cell is the cell itself).
    """
    if feats.ndim != 4:
        raise VoloError(
            f"timm model {type(model).__name__} returns features of shape {tuple(feats.shape)}, not a spatial map; "
            "use a convolutional timm model (resnet, nfnet, convnext, efficientnet...)."
        )
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
    f = feats if nhwc else feats.permute(0, 2, 3, 1)  # (B, h, w, C)
    B, h, w, C = f.shape
    cells = f.reshape(B * h * w, 1, 1, C) if nhwc else f.reshape(B * h * w, C, 1, 1)
    logits = model.forward_head(cells)  # (B*h*w, K)
    return logits.float().reshape(B, h, w, -1).permute(0, 3, 1, 2)


class TimmTeacherNet(nn.Module):
    """A timm classifier trained by `volo train` (see the module docstring)."""

    def __init__(self, name: str, img_size: int, num_classes: int, drop_path_rate: float = 0.0, drop_rate: float = 0.0):
        super().__init__()
        name = name.removeprefix(TIMM_PREFIX)
        kwargs = {"drop_rate": drop_rate}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.model = create_timm(name, num_classes, **kwargs)
        self.arch = TimmArch(name, img_size, num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.set_grad_checkpointing(True)

    def forward(self, images: torch.Tensor, mix_box: torch.Tensor | None = None):
        if mix_box is not None:
            raise VoloError("A timm teacher trains without MixToken; pass --set token_labels.mixtoken=false.")
        if not self.training:
            return self.model(images)
        feats = self.model.forward_features(images)
        cls_logits = self.model.forward_head(feats)
        grid = (images.shape[2] // 16, images.shape[3] // 16)
        cells = per_location_logits(self.model, feats)
        cells = F.interpolate(cells, size=grid, mode="bilinear", align_corners=False)
        return VoloTrainOutput(cls_logits, cells.flatten(2).transpose(1, 2))

    def load_init(self, path: str | Path) -> None:
        """Fine-tune start: weights of this timm model (ours or timm's own file); a head of another class count is
        left at its initialisation."""
        state = read_state_dict(path)
        own = self.model.state_dict()
        fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        missing = [k for k in own if k not in fits]
        if len(fits) < len(own) // 2:
            raise VoloError(
                f"{path} does not hold {self.arch.timm} weights ({len(fits)} of {len(own)} tensors fit); "
                "pass a checkpoint of the same timm model."
            )
        self.model.load_state_dict(fits, strict=False)
        if missing:
            print(f"volo train: {path}: {len(missing)} tensor(s) re-initialised (e.g. {missing[0]})")


def build_timm_teacher(
    name: str, img_size: int, num_classes: int, checkpoint: str | Path | None, drop_path_rate: float, drop_rate: float
) -> TimmTeacherNet:
    net = TimmTeacherNet(name, img_size, num_classes, drop_path_rate, drop_rate)
    if checkpoint is not None:
        net.load_init(checkpoint)
    return net


def save_timm_weights(net: TimmTeacherNet, path: str | Path, extra: dict | None = None) -> Path:
    """`path`.safetensors with timm's own key names, and `path`.json with the architecture and `extra`."""
    from volo.models.weights import write_safetensors  # atomic, like every weights export

    meta = {"arch": net.arch.to_dict(), "variant": None, **(extra or {})}
    return write_safetensors(net.model.state_dict(), path, meta)


def timm_meta(path: str | Path) -> dict | None:
    """The `arch` of a weights file exported by `save_timm_weights`, or None for any other file."""
    meta = Path(path).with_suffix(".json")
    if Path(path).suffix != ".safetensors" or not meta.is_file():
        return None
    arch = json.loads(meta.read_text()).get("arch", {})
    return arch if "timm" in arch else None
