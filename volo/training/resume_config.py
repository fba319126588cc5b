"""Does a resume continue the same run? The checkpoint's config against this launch's, key by key.

Keys that change where files live, how often things are logged or saved, or how fast the run goes may differ
(`FREE`); so may the split of the global batch over processes (2 x 4 -> 1 x 8). Anything else (lr, seed, model,
schedule, augmentation, global batch, ...) changes what the rest of the run computes: refused with one line listing
the changes, unless `--allow-config-change`, in which case it is a warning and the previous config.yaml is kept as
`config.before_step<N>.yaml`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from volo.distributed.process_group import DistInfo
from volo.errors import VoloError
from volo.training.config import RunConfig

FREE = {
    "data.path",
    "data.workers",
    "data.loader_device",
    "data.eval_batch_size",
    "train.batch_size",
    "train.accumulation",
    "train.compile",
    "train.compile_mode",
    "train.log_every",
    "train.max_steps",
    "train.progress",
    "train.max_bad_steps",
    "checkpoint.output_dir",
    "checkpoint.run_name",
    "checkpoint.keep_last",
    "checkpoint.milestones",
    "checkpoint.every_steps",
    "checkpoint.eval_every",
    "recipe",
}
"""Keys a resume may change freely."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _global_batch(flat: dict, world_size: int) -> int | None:
    try:
        return int(flat["train.batch_size"]) * int(flat.get("train.accumulation", 1)) * int(world_size)
    except (KeyError, TypeError, ValueError):
        return None


def config_changes(saved: dict, saved_world: int, cfg: RunConfig, world_size: int) -> list[str]:
    """`key: old -> new` for every run-defining value that differs between a checkpoint and this launch."""
    old, new = _flat(saved if isinstance(saved, dict) else {}), _flat(cfg.to_dict())
    changes = [
        f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}"
        for k in sorted(set(old) | set(new))
        if k not in FREE and old.get(k) != new.get(k)
    ]
    before, after = _global_batch(old, saved_world), _global_batch(new, world_size)
    if before is not None and before != after:
        changes.append(f"global batch: {before} -> {after} (processes x train.batch_size x train.accumulation)")
    return changes


def check_resume_config(
    saved: dict, saved_world: int, cfg: RunConfig, dist: DistInfo, path: Path, allow: bool
) -> list[str]:
    """Refuse (with `allow`: warn about) a resume whose config differs from the checkpoint's; returns the changes."""
    changes = config_changes(saved, saved_world, cfg, dist.world_size)
    if not changes:
        return changes
    listed = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    if not allow:
        raise VoloError(
            f"Resuming {path} with a changed config ({listed}); resume with the recipe and --set values it was "
            "trained with, pass --allow-config-change to continue anyway, or start a new run (--name)."
        )
    if dist.is_main:
        note = f"Resuming {path} with a changed config ({listed}), as --allow-config-change allows."
        warnings.warn(note, stacklevel=2)
        config_yaml = Path(cfg.checkpoint.output_dir) / (cfg.checkpoint.run_name or cfg.recipe) / "config.yaml"
        if config_yaml.is_file():
            step = saved_step(path)
            config_yaml.replace(config_yaml.with_name(f"config.before_step{step}.yaml"))
    return changes


def saved_step(path: Path) -> str:
    digits = "".join(c for c in path.stem.rsplit("step", 1)[-1] if c.isdigit())
    return str(int(digits)) if digits else "unknown"
