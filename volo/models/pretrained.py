"""timm's `pretrained_cfg` for every VOLO network, and `pretrained=True`: where the released weights are found.

`pretrained_cfg(arch)` describes a network the way timm does (input size, crop_pct, interpolation, mean, std,
num_classes, the released checkpoint's file, URL and Hugging Face hub id). Its eval settings come from
`variants.eval_config_of`, the same table `volo eval`, in-run evaluation and `volo predict` read.

`find_pretrained(name, size)` looks for the released weights of `<name>_<size>.sail_in1k`, first hit wins:
  1. `file`: a local file given as `pretrained_cfg_overlay=dict(file=PATH)` (timm's way to point at a file);
  2. `$VOLO_PRETRAINED`: a weights file, or an offline mirror folder holding the released file
     (`d1_224_84.2.pth.tar`), `<hub name>.safetensors` or `<hub name>/model.safetensors` (`pytorch_model.bin`);
  3. the Hugging Face cache timm downloads into (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
     `~/.cache/huggingface/hub`): `models--timm--volo_d1_224.sail_in1k/snapshots/<rev>/model.safetensors`;
  4. torch.hub's cache (`$TORCH_HOME/hub/checkpoints/<released file>`), where timm's URL downloads land;
  5. a download from the hub (`timm/<hub name>`, as timm does), unless `HF_HUB_OFFLINE=1` or `VOLO_OFFLINE=1`.
Nothing found and no download possible: a one-line `VoloError` naming the places looked and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from volo.errors import VoloError
from volo.models.variants import VoloArch, eval_config_of, identify_variant

TAG = "sail_in1k"
"""timm's pretrained tag of the released VOLO weights (ImageNet-1k, Sea AI Lab)."""
RELEASE_URL = "https://github.com/sail-sg/volo/releases/download/volo_1/"
RELEASES: dict[tuple[str, int], str] = {
    ("volo_d1", 224): "d1_224_84.2.pth.tar",
    ("volo_d1", 384): "d1_384_85.2.pth.tar",
    ("volo_d2", 224): "d2_224_85.2.pth.tar",
    ("volo_d2", 384): "d2_384_86.0.pth.tar",
    ("volo_d3", 224): "d3_224_85.4.pth.tar",
    ("volo_d3", 448): "d3_448_86.3.pth.tar",
    ("volo_d4", 224): "d4_224_85.7.pth.tar",
    ("volo_d4", 448): "d4_448_86.79.pth.tar",
    ("volo_d5", 224): "d5_224_86.10.pth.tar",
    ("volo_d5", 448): "d5_448_87.0.pth.tar",
    ("volo_d5", 512): "d5_512_87.07.pth.tar",
}
"""(variant, resolution) -> the released checkpoint's file name (ImageNet-1k, 1000 classes)."""
ENV_PRETRAINED = "VOLO_PRETRAINED"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_name(variant: str, size: int) -> str:
    """timm's name of a released checkpoint: `volo_d1_224.sail_in1k`."""
    return f"{variant}_{size}.{TAG}"


def pretrained_names() -> list[str]:
    """timm names of every released checkpoint (what `list_models(pretrained=True)` lists)."""
    return [hub_name(v, s) for v, s in RELEASES]


def pretrained_cfg(arch: VoloArch) -> dict:
    """timm's `pretrained_cfg` of a network: its eval settings and, where one exists, its released checkpoint."""
    variant = identify_variant(arch, match_heads=False)
    size = arch.img_size
    ev = eval_config_of(arch)
    release = RELEASES.get((variant, size)) if variant else None
    return {
        "architecture": f"{variant}_{size}" if variant else "volo_custom",
        "tag": TAG if release else None,
        "hf_hub_id": f"timm/{hub_name(variant, size)}" if release else None,
        "url": RELEASE_URL + release if release else None,
        "released_file": release,
        "num_classes": arch.num_classes,
        "input_size": (arch.in_chans, size, size),
        "fixed_input_size": False,  # pos_embed is resized to any multiple of 16
        "crop_pct": ev.crop_pct,
        "crop_mode": "center",
        "interpolation": ev.interpolation,
        "mean": tuple(ev.mean),
        "std": tuple(ev.std),
        "first_conv": "patch_embed.conv.0",
        "classifier": ("head", "aux_head"),
        "license": "apache-2.0",
    }


def release_size(variant: str, name_size: int | None, img_size: int | None) -> int:
    """Which released resolution `pretrained=True` loads: the name's (`volo_d1_384`), else `img_size`'s if one was
    released, else the first release (224); the model's pos_embed is resized to its own size on loading."""
    sizes = [s for v, s in RELEASES if v == variant]
    if not sizes:
        raise VoloError(
            f"{variant} has no released weights; pretrained=True works for "
            f"{', '.join(sorted({v for v, _ in RELEASES}))}."
        )
    if name_size is not None:
        if name_size not in sizes:
            raise VoloError(
                f"No released {variant} weights at {name_size} px (released: {', '.join(map(str, sizes))}); "
                f"use {variant}_{sizes[0]} with img_size={name_size} (pos_embed is resized)."
            )
        return name_size
    return img_size if img_size in sizes else sizes[0]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it (read at call time, so tests may set it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def _in_hf_cache(repo_id: str) -> Path | None:
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    revisions = [ref.read_text().strip()] if ref.is_file() else []
    revisions += sorted(p.name for p in (repo / "snapshots").glob("*") if p.name not in revisions)
    for rev in revisions:
        for fname in HUB_FILES:
            if (hit := repo / "snapshots" / rev / fname).is_file():
                return hit
    return None


def _in_mirror(folder: Path, name: str, release: str) -> Path | None:
    candidates = [folder / release, folder / f"{name}.safetensors", folder / f"{name}.bin"]
    candidates += [folder / name / f for f in HUB_FILES]
    return next((c for c in candidates if c.is_file()), None)


def _torch_hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(repo_id: str) -> Path:
    """Fetch the hub file as timm does (huggingface_hub); raises on any failure."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, HUB_FILES[0]))


def find_pretrained(variant: str, size: int, file: str | Path | None = None) -> Path:
    """The local path of the released weights of `variant` at `size` (see the module docstring for the order)."""
    name, release = hub_name(variant, size), RELEASES[(variant, size)]
    repo_id = f"timm/{name}"
    if file is not None:
        if not Path(file).is_file():
            raise VoloError(f"pretrained_cfg_overlay file {file} does not exist; pass the path of a weights file.")
        return Path(file)
    looked = []
    env = os.environ.get(ENV_PRETRAINED)
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise VoloError(f"${ENV_PRETRAINED}={env} is neither a weights file nor a folder; fix or unset it.")
        if (hit := _in_mirror(path, name, release)) is not None:
            return hit
        looked.append(f"${ENV_PRETRAINED} {path}")
    if (hit := _in_hf_cache(repo_id)) is not None:
        return hit
    looked.append(f"HF cache {hf_cache_dir()}")
    if (hit := _torch_hub_dir() / release).is_file():
        return hit
    looked.append(f"torch hub {_torch_hub_dir()}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("VOLO_OFFLINE", "0") != "0"
    reason = "offline (HF_HUB_OFFLINE/VOLO_OFFLINE set)"
    if not offline:
        try:
            return _download(repo_id)
        except Exception as err:  # no network, no huggingface_hub, hub down: all end in the same advice
            reason = f"download from hf.co/{repo_id} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    raise VoloError(
        f"Pretrained weights {name} not found ({'; '.join(looked)}) and {reason}; put {release} (from "
        f"{RELEASE_URL}) or {name}.safetensors in a folder and set ${ENV_PRETRAINED} to it, or pass "
        "pretrained_cfg_overlay=dict(file=PATH)."
    )
