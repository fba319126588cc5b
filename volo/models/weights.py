"""Reading and writing VOLO weights in every form the released files and timm use.

Accepted: a raw state_dict, or a dict holding it under `state_dict_ema`, `state_dict`, `model` or `module`;
keys with or without `module.` / `_orig_mod.` prefixes; `.pth`, `.pth.tar`, `.pt`, `.bin` (always loaded with
`torch.load(weights_only=True)`, so a pickle can never run code) and `.safetensors`.
Saved: `<name>.safetensors` plus `<name>.json` with the model's architecture (see `save_weights`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from volo.errors import VoloError
from volo.models.variants import VARIANTS, VoloArch, identify_variant

_WRAPPER_KEYS = ("state_dict_ema", "state_dict", "model_ema", "model", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")


HEAD_KEYS = ("head.weight", "head.bias", "aux_head.weight", "aux_head.bias")
"""The classifier heads: dropped (re-initialised) when a checkpoint's class count differs from the model's."""


def read_state_dict(path: str | Path, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, with wrappers and prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise VoloError(f"Checkpoint {path} does not exist; pass the path of a .pth/.pth.tar/.safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as err:
            raise VoloError(
                f"{path} is not a readable safetensors file ({err}); re-export or re-download it."
            ) from None
    else:
        try:
            with warnings.catch_warnings():  # "pickle protocol 4" notices from older torch.save files
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise VoloError(
                f"{path} could not be loaded as a PyTorch checkpoint with weights_only=True ({_load_reason(err)}). "
                "It is not a checkpoint, is damaged, or holds objects other than tensors (refused for safety)."
            ) from None
    return clean_state_dict(obj, path, prefer_ema)


def _load_reason(err: Exception) -> str:
    """The informative line of a torch.load error (torch prefixes a long generic notice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "unpickl" in line.lower() and "weights_only" not in line:
            return line.removeprefix("WeightsUnpickler error: ")[:200]
    return f"{type(err).__name__}: {lines[-1] if lines else 'no detail'}"[:200]


def clean_state_dict(obj: object, source: str | Path = "checkpoint", prefer_ema: bool = True) -> dict:
    """Unwrap `{'state_dict'|'state_dict_ema'|'model': ...}` and strip `module.`-style prefixes."""
    order = _WRAPPER_KEYS if prefer_ema else tuple(k for k in _WRAPPER_KEYS if "ema" not in k)
    while isinstance(obj, dict) and not _looks_like_state_dict(obj):
        inner = next((obj[k] for k in order if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            raise VoloError(
                f"{source} holds no model weights (top-level keys: {sorted(map(str, obj))[:8]}); "
                "expected a state_dict or a dict with 'state_dict', 'state_dict_ema' or 'model'."
            )
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise VoloError(f"{source} holds no model weights; expected a state_dict (a dict of tensors).")
    out = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _looks_like_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def arch_from_state_dict(sd: dict[str, torch.Tensor]) -> VoloArch:
    """Infer a VOLO architecture from tensor shapes (which variant, resolution and class count a file holds)."""
    required = ("patch_embed.conv.0.weight", "patch_embed.proj.weight", "pos_embed", "head.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise VoloError(f"These weights are not a VOLO model: keys {missing} are missing.")
    layers = []
    for stage in (0, 2, 3, 4):
        idx = {int(k.split(".")[2]) for k in sd if k.startswith(f"network.{stage}.") and k.split(".")[2].isdigit()}
        layers.append(len(idx))
    dims = [sd["network.0.0.norm1.weight"].shape[0] if layers[0] else sd["patch_embed.proj.weight"].shape[0]]
    for stage in (2, 3, 4):
        dims.append(
            sd[f"network.{stage}.0.norm1.weight"].shape[0]
            if layers[(2, 3, 4).index(stage) + 1]
            else sd["pos_embed"].shape[-1]
        )
    k4 = 81
    heads0 = sd["network.0.0.attn.attn.weight"].shape[0] // k4 if layers[0] else dims[0] // 32
    fc1 = next((v for k, v in sd.items() if k.endswith("mlp.fc1.weight")), None)
    mlp_ratio = fc1.shape[0] / fc1.shape[1] if fc1 is not None else 3.0
    post = len({int(k.split(".")[1]) for k in sd if k.startswith("post_network.")})
    grid = sd["pos_embed"].shape[1]
    arch = VoloArch(
        layers=tuple(layers),
        embed_dims=tuple(dims),
        num_heads=(heads0,) + tuple(d // 32 for d in dims[1:]),
        mlp_ratio=mlp_ratio,
        stem_hidden=sd["patch_embed.conv.0.weight"].shape[0],
        num_post_layers=post,
        img_size=grid * 16,
        num_classes=sd["head.weight"].shape[0],
        in_chans=sd["patch_embed.conv.0.weight"].shape[1],
    )
    # Transformer head counts leave no trace in tensor shapes: take them from the matching known variant.
    known = identify_variant(arch, match_heads=False)
    if known is not None:
        arch = arch.with_overrides(num_heads=VARIANTS[known].arch.num_heads)
    return arch


def describe(arch: VoloArch) -> str:
    name = identify_variant(arch) or f"a custom VOLO (layers {arch.layers}, dims {arch.embed_dims})"
    return f"{name} @{arch.img_size} with {arch.num_classes} classes"


def adapt_state_dict(sd: dict[str, torch.Tensor], model: torch.nn.Module, source: str | Path) -> dict:
    """Make `sd` fit `model`: same variant required; pos_embed resized and heads dropped when they differ.

    Returns the adapted dict; keys dropped for the new class count are left to the model's fresh init.
    """
    from volo.models.volo import resize_pos_embed

    file_arch = arch_from_state_dict(sd)
    target = model.arch
    # what tensor shapes determine (the outlookers' heads: attn.weight rows; later head counts leave no trace)
    shape_keys = ("layers", "embed_dims", "mlp_ratio", "stem_hidden", "num_post_layers")
    if (
        any(getattr(file_arch, k) != getattr(target, k) for k in shape_keys)
        or file_arch.num_heads[0] != target.num_heads[0]
    ):
        raise VoloError(
            f"{source} holds {describe(file_arch)}, but the model is {describe(target)}; "
            f"create the model as {identify_variant(file_arch) or 'that architecture'} to load it."
        )
    if file_arch.in_chans != target.in_chans:
        raise VoloError(
            f"{source} has a stem for {file_arch.in_chans} input channels but the model takes {target.in_chans}."
        )
    sd = dict(sd)
    grid = model.pos_embed.shape[1:3]
    if tuple(sd["pos_embed"].shape[1:3]) != tuple(grid):
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"].float(), tuple(grid)).to(sd["pos_embed"].dtype)
    if file_arch.num_classes != target.num_classes:
        for key in HEAD_KEYS:
            sd.pop(key, None)
    return sd


def load_weights(
    model: torch.nn.Module, path: str | Path, prefer_ema: bool = True, state_dict: dict | None = None
) -> list[str]:
    """Load a weights file into `model`, resizing pos_embed and re-initialising heads where needed.

    `state_dict`: the file's tensors when the caller has already read them (`read_state_dict(path)`), so a
    large checkpoint is read once. Returns the keys left at their fresh initialisation (the heads, after a
    class-count change).
    """
    sd = state_dict if state_dict is not None else read_state_dict(path, prefer_ema)
    adapted = adapt_state_dict(sd, model, path)
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    allowed = set(sd) - set(adapted)  # only the heads dropped for a new class count stay at their fresh init
    if unexpected or set(missing) - allowed:
        raise VoloError(
            f"{path} does not match the model: missing {sorted(set(missing) - allowed)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return list(missing)


def save_weights(model: torch.nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write `path` (.safetensors) and, beside it, `path.with_suffix('.json')` with the architecture."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    meta = {"arch": model.arch.to_dict(), "variant": identify_variant(model.arch), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_weights_meta(path: str | Path) -> dict | None:
    """The JSON written beside a `.safetensors` file by `save_weights`, if there is one."""
    meta = Path(path).with_suffix(".json")
    if Path(path).suffix == ".safetensors" and meta.is_file():
        return json.loads(meta.read_text())
    return None
