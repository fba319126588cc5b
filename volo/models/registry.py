"""`create_model` and `list_models`: the one-line public API, in the spirit of timm."""

from __future__ import annotations

from pathlib import Path

from volo.errors import VoloError
from volo.models.variants import VARIANTS, VoloArch
from volo.models.volo import Volo
from volo.models.weights import arch_from_state_dict, load_weights, read_state_dict, read_weights_meta


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return list(VARIANTS)


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
    img_size: int | None = None,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    **overrides,
) -> Volo:
    """A VOLO network by name (`volo_tiny`, `volo_d1`..`volo_d5`), optionally loaded from `checkpoint`.

    The checkpoint may be at another resolution (pos_embed is resized) or class count (heads re-initialised).
    `overrides` are `VoloArch` fields (drop_path_rate=0.1, in_chans=1, ...). `name='auto'` with a checkpoint
    builds whatever architecture the file holds (its resolution and class count unless given).
    """
    if name == "auto":
        if checkpoint is None:
            raise VoloError("create_model('auto') needs a checkpoint to read the architecture from.")
        meta = read_weights_meta(checkpoint)
        state_dict = read_state_dict(checkpoint)  # read once: for the architecture and the weights
        arch = VoloArch.from_dict(meta["arch"]) if meta else arch_from_state_dict(state_dict)
        size_from_name = None
    else:
        base, size_from_name = resolve_name(name)
        arch = VARIANTS[base].arch
        state_dict = None
    unknown = set(overrides) - set(VoloArch.__dataclass_fields__)
    if unknown:
        raise VoloError(
            f"Unknown model option(s) {sorted(unknown)}; valid ones: {sorted(VoloArch.__dataclass_fields__)}."
        )
    size = img_size or size_from_name or arch.img_size  # Volo() refuses a size that is not a multiple of 16
    arch = arch.with_overrides(img_size=size, num_classes=num_classes or arch.num_classes, **overrides)
    model = Volo(arch)
    if checkpoint is not None:
        load_weights(model, checkpoint, state_dict=state_dict)
    return model
