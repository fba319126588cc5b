"""`create_model` and `list_models`: the one-line public API, in the spirit of timm."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from volo.errors import VoloError
from volo.models.features import VoloFeatures
from volo.models.pretrained import find_pretrained, pretrained_names, release_size
from volo.models.variants import VARIANTS, VoloArch, identify_variant
from volo.models.volo import Volo
from volo.models.weights import file_arch, load_weights, read_state_dict


def list_models(pattern: str = "", pretrained: bool = False) -> list[str]:
    """Names accepted by `create_model`, as timm: `pattern` is a shell-style filter ("volo_d*", "*384*");
    `pretrained=True` lists the released checkpoints by timm's names (`volo_d1_224.sail_in1k`)."""
    names = pretrained_names() if pretrained else list(VARIANTS)
    return [n for n in names if not pattern or fnmatch.fnmatch(n, pattern)]


def resolve_name(name: str) -> tuple[str, int | None]:
    """`volo_d1`, `volo_d1_384` or timm's `volo_d1_384.sail_in1k` -> (`volo_d1`, 384 or None)."""
    base = name.split(".")[0]
    parts = base.rsplit("_", 1)
    if base not in VARIANTS and len(parts) == 2 and parts[1].isdigit() and parts[0] in VARIANTS:
        return parts[0], int(parts[1])
    if base not in VARIANTS:
        raise VoloError(f"Unknown model {name!r}; choose one of {', '.join(list_models())}.")
    return base, None


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    img_size: int | None = None,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    features_only: bool = False,
    out_indices: int | list[int] | tuple[int, ...] | None = None,
    pretrained_cfg_overlay: dict | None = None,
    **overrides,
):
    """A VOLO network by name (`volo_tiny`, `volo_d1`..`volo_d5`, timm's `volo_d1_384[.sail_in1k]`).

    `pretrained=True` loads the released ImageNet weights (see `volo.models.pretrained` for where they are found:
    `pretrained_cfg_overlay=dict(file=PATH)`, `$VOLO_PRETRAINED`, the Hugging Face / torch.hub caches, a
    download). `checkpoint` (or timm's `checkpoint_path`) loads a weights file instead. Either may be at another
    resolution (pos_embed is resized) or class count (heads re-initialised; `num_classes=0` removes them and the
    model returns pooled features). `features_only=True` returns a `VoloFeatures` giving the NCHW maps of
    `out_indices` (levels 0..3; strides 8, 16, 16, 16). `overrides` are `VoloArch` fields (drop_path_rate=0.1,
    in_chans=1, ...). `name='auto'` with a checkpoint builds whatever architecture the file holds.
    The model's `load_notes` say what loading changed (pos_embed resized, heads re-initialised).
    """
    if not isinstance(pretrained, bool):
        raise VoloError(f"create_model's second argument is pretrained (True/False); got {pretrained!r}.")
    checkpoint = checkpoint if checkpoint is not None else checkpoint_path
    if pretrained and checkpoint is not None:
        raise VoloError("Pass pretrained=True or checkpoint=..., not both.")
    if name == "auto":
        if checkpoint is None:
            raise VoloError("create_model('auto') needs a checkpoint to read the architecture from.")
        state_dict = read_state_dict(checkpoint)  # read once: for the architecture and the weights
        arch = file_arch(state_dict, checkpoint)  # shapes from the tensors, checked against a JSON sidecar
        base, size_from_name = identify_variant(arch), None
    else:
        base, size_from_name = resolve_name(name)
        arch = VARIANTS[base].arch
        state_dict = None
    unknown = set(overrides) - set(VoloArch.__dataclass_fields__)
    if unknown:
        raise VoloError(
            f"Unknown model option(s) {sorted(unknown)}; valid ones: {sorted(VoloArch.__dataclass_fields__)} "
            "and create_model's pretrained, img_size, num_classes, checkpoint, features_only, out_indices."
        )
    if pretrained:
        if base is None:
            raise VoloError("pretrained=True needs a named variant (volo_d1 .. volo_d5), not 'auto'.")
        release = release_size(base, size_from_name, img_size)
        file = (pretrained_cfg_overlay or {}).get("file")
        checkpoint = find_pretrained(base, release, file)
        size_from_name = size_from_name or release
    size = img_size or size_from_name or arch.img_size  # Volo() refuses a size that is not a multiple of 16
    classes = num_classes if num_classes is not None else arch.num_classes
    arch = arch.with_overrides(img_size=size, num_classes=classes, **overrides)
    model = Volo(arch)
    model.load_notes = []
    if checkpoint is not None:
        if state_dict is None:
            state_dict = read_state_dict(checkpoint)
        load_weights(model, checkpoint, state_dict=state_dict)  # checks the file is this architecture
        model.load_notes = _load_notes(state_dict, model)
    if pretrained_cfg_overlay:
        model.pretrained_cfg = {**model.pretrained_cfg, **pretrained_cfg_overlay}
    if features_only:
        return VoloFeatures(model, out_indices)
    if out_indices is not None:
        raise VoloError("out_indices needs features_only=True (or call model.forward_intermediates(x, indices)).")
    return model


def _load_notes(state_dict: dict, model: Volo) -> list[str]:
    """What loading `state_dict` into `model` changes: a resized pos_embed, re-initialised heads."""
    notes = []
    grid, want = tuple(state_dict["pos_embed"].shape[1:3]), tuple(model.pos_embed.shape[1:3])
    if grid != want:
        notes.append(f"pos_embed resized {grid[0]}x{grid[1]} -> {want[0]}x{want[1]} (bicubic)")
    classes = state_dict["head.weight"].shape[0] if "head.weight" in state_dict else None
    if classes is not None and classes != model.num_classes:
        notes.append(f"heads re-initialised: {classes} -> {model.num_classes} classes")
    return notes
