"""Reading and writing VOLO weights in every form the released files and timm use.

Accepted: a raw state_dict, or a dict holding it under `state_dict_ema`, `state_dict`, `model` or `module`;
keys with or without `module.` / `_orig_mod.` prefixes; `.pth`, `.pth.tar`, `.pt`, `.bin` (always loaded with
`torch.load(weights_only=True)`, so a pickle can never run code) and `.safetensors`.
Saved: `<name>.safetensors` plus `<name>.json` with the model's architecture (see `save_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from volo.errors import VoloError
from volo.models.variants import VARIANTS, VoloArch, identify_variant
from volo.safe_load import safe_torch_load

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
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise VoloError(
                f"{path} is not a readable safetensors file ({first}); re-export or re-download it."
            ) from None
    else:
        obj = safe_torch_load(
            path, "it is not a checkpoint, is damaged, or holds objects other than tensors (refused for safety)."
        )
    return clean_state_dict(obj, path, prefer_ema)


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


def _shape(sd: dict[str, torch.Tensor], key: str, ndim: int, source: str | Path) -> tuple[int, ...]:
    """The shape of `sd[key]`, which must be a tensor of `ndim` dimensions, none of them empty."""
    t = sd[key]
    if not isinstance(t, torch.Tensor) or t.ndim != ndim or 0 in t.shape:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise VoloError(
            f"{source}: tensor {key} has shape {shape}, expected a non-empty {ndim}-D tensor; the file is damaged "
            "or not a VOLO model."
        )
    return tuple(t.shape)


def arch_from_state_dict(sd: dict[str, torch.Tensor], source: str | Path = "these weights") -> VoloArch:
    """Infer a VOLO architecture from tensor shapes (which variant, resolution and class count a file holds)."""
    required = ("patch_embed.conv.0.weight", "patch_embed.proj.weight", "pos_embed", "head.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise VoloError(f"{source} is not a VOLO model: keys {missing} are missing.")
    stem = _shape(sd, "patch_embed.conv.0.weight", 4, source)  # (stem_hidden, in_chans, 7, 7)
    pos = _shape(sd, "pos_embed", 4, source)  # (1, H/16, W/16, C)
    head = _shape(sd, "head.weight", 2, source)  # (num_classes, C)
    layers = []
    for stage in (0, 2, 3, 4):
        idx = {int(k.split(".")[2]) for k in sd if k.startswith(f"network.{stage}.") and k.split(".")[2].isdigit()}
        layers.append(len(idx))
    dims = [_shape(sd, "network.0.0.norm1.weight", 1, source)[0] if layers[0] else pos[-1]]
    for stage in (2, 3, 4):
        key = f"network.{stage}.0.norm1.weight"
        dims.append(_shape(sd, key, 1, source)[0] if layers[(2, 3, 4).index(stage) + 1] else pos[-1])
    k4 = 81
    heads0 = _shape(sd, "network.0.0.attn.attn.weight", 2, source)[0] // k4 if layers[0] else dims[0] // 32
    fc1 = next((k for k in sd if k.endswith("mlp.fc1.weight")), None)
    hidden, width = _shape(sd, fc1, 2, source) if fc1 is not None else (3, 1)
    post = len({int(k.split(".")[1]) for k in sd if k.startswith("post_network.")})
    if heads0 < 1:
        raise VoloError(f"{source}: the outlooker's attention has no heads; the file is damaged.")
    arch = VoloArch(
        layers=tuple(layers),
        embed_dims=tuple(dims),
        num_heads=(heads0,) + tuple(d // 32 if d % 32 == 0 else 1 for d in dims[1:]),  # a guess: see below
        mlp_ratio=hidden / width,
        stem_hidden=stem[0],
        num_post_layers=post,
        img_size=pos[1] * 16,
        num_classes=head[0],
        in_chans=stem[1],
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

    file_arch = arch_from_state_dict(sd, source)
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
    expected = model.state_dict()
    wrong = [k for k, v in adapted.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise VoloError(
            f"{path}: {len(wrong)} tensor(s) have the wrong shape (e.g. {k} is {tuple(adapted[k].shape)}, the model's "
            f"{tuple(expected[k].shape)}); the file is damaged or holds another architecture."
        )
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    allowed = set(sd) - set(adapted)  # only the heads dropped for a new class count stay at their fresh init
    if unexpected or set(missing) - allowed:
        raise VoloError(
            f"{path} does not match the model: missing {sorted(set(missing) - allowed)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return list(missing)


def save_weights(model: torch.nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write `path` (.safetensors) and, beside it, `path.with_suffix('.json')` with the architecture.

    Both are written atomically (`volo.atomic`): a full disk leaves the previous files whole and raises `OSError`
    (safetensors' own writer would raise `SafetensorError`). Weights holding a NaN or an infinity are refused.
    """
    meta = {"arch": model.arch.to_dict(), "variant": identify_variant(model.arch), **(extra or {})}
    return write_safetensors(model.state_dict(), path, meta)


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path, meta: dict) -> Path:
    """`path`.safetensors and `path`.json, each atomic (a full disk: `OSError`, the previous files whole); refuses
    tensors holding NaN or inf."""
    from safetensors.torch import save

    from volo.atomic import atomic_write_bytes, atomic_write_text

    path = Path(path).with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise VoloError(
            f"Not writing {path}: the weights hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]}); "
            "training diverged: lower optim.lr_base or set train.clip_grad, and resume from a checkpoint."
        )
    atomic_write_bytes(save(tensors, metadata={"format": "pt"}), path)
    atomic_write_text(json.dumps(meta, indent=2) + "\n", path.with_suffix(".json"))
    return path


def read_weights_meta(path: str | Path) -> dict | None:
    """The JSON written beside a `.safetensors` file by `save_weights`, if there is one (VoloError when it is not
    a JSON object with an `arch` object)."""
    meta = Path(path).with_suffix(".json")
    if Path(path).suffix != ".safetensors" or not meta.is_file():
        return None
    try:
        obj = json.loads(meta.read_text())
    except (OSError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise VoloError(f"{meta} (beside {path}) is not readable JSON ({reason}); delete it or re-export.") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("arch"), dict):
        raise VoloError(f"{meta} (beside {path}) has no 'arch' object; delete it or re-export the weights.")
    return obj


ARCH_FROM_SHAPES = ("layers", "embed_dims", "mlp_ratio", "stem_hidden", "num_post_layers", "img_size", "num_classes")
"""The `VoloArch` fields tensor shapes determine (with in_chans and the outlookers' head count)."""


def file_arch(sd: dict[str, torch.Tensor], path: str | Path) -> VoloArch:
    """The architecture a weights file holds. Shapes come from the tensors; the JSON sidecar, when there is one,
    is checked against them and adds only what shapes cannot show (transformer head counts, drop rates)."""
    arch = arch_from_state_dict(sd, path)
    meta = read_weights_meta(path)
    if meta is None:
        return arch
    sidecar = Path(path).with_suffix(".json")
    try:
        claimed = VoloArch.from_dict(meta["arch"])
        fields = [*ARCH_FROM_SHAPES, "in_chans"]
        differ = [f for f in fields if getattr(claimed, f) != getattr(arch, f)]
        if claimed.num_heads[0] != arch.num_heads[0]:
            differ.append("num_heads")
        heads_ok = all(int(d) % int(h) == 0 for d, h in zip(arch.embed_dims, claimed.num_heads, strict=True))
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as err:
        raise VoloError(f"{sidecar}: its 'arch' is malformed ({err}); delete it or re-export the weights.") from None
    if differ:
        f = differ[0]
        raise VoloError(
            f"{sidecar} disagrees with the tensors of {path} ({f}: sidecar {str(getattr(claimed, f))[:40]}, tensors "
            f"{getattr(arch, f)}); delete or fix the sidecar."
        )
    if not heads_ok:
        raise VoloError(f"{sidecar}: num_heads {claimed.num_heads} do not divide embed_dims {arch.embed_dims}.")
    return claimed
