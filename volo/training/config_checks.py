"""Range checks of a `RunConfig`: every value a recipe or `--set` can give, with the rule it broke in the error.

`RunConfig.validate` imports this module when it runs; nothing here imports `volo.training.config` back.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

from volo.data.loader_spec import BACKENDS
from volo.errors import VoloError

if TYPE_CHECKING:
    from volo.training.config import RunConfig

COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

MAX_LR = 1.0
"""optim.lr_base, schedule.warmup_lr and min_lr above this make AdamW's first update blow the weights up."""
MAX_IMG_SIZE = 2048
MAX_WORKERS = 256
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
RUN_NAME_RULE = "1-200 letters, digits or ._+=@- (starting with a letter or digit; no '/', no '..')"


def _check(ok: bool, key: str, rule: str, value) -> None:
    if not ok:
        raise VoloError(f"Config value {key}={value!r} is out of range: it must be {rule}.")


def validate(cfg: RunConfig) -> None:
    """Raise a one-line VoloError naming the first out-of-range value and its allowed range."""
    m, d, t, o, s, tr, c = cfg.model, cfg.data, cfg.token_labels, cfg.optim, cfg.schedule, cfg.train, cfg.checkpoint
    _check(
        16 <= m.img_size <= MAX_IMG_SIZE and m.img_size % 16 == 0,
        "model.img_size",
        f"a positive multiple of 16 up to {MAX_IMG_SIZE}",
        m.img_size,
    )
    _check(m.num_classes >= 1, "model.num_classes", ">= 1", m.num_classes)
    _check(0 <= m.drop_path_rate < 1, "model.drop_path_rate", "in [0, 1)", m.drop_path_rate)
    _check(0 <= m.drop_rate < 1, "model.drop_rate", "in [0, 1)", m.drop_rate)
    _check(0 <= d.workers <= MAX_WORKERS, "data.workers", f"in [0, {MAX_WORKERS}]", d.workers)
    if d.loader not in BACKENDS:
        raise VoloError(f"Config value data.loader={d.loader!r} is unknown; choose one of {', '.join(BACKENDS)}.")
    dev = d.loader_device
    _check(
        dev is None or dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
        "data.loader_device",
        "null, cpu, cuda or cuda:N",
        dev,
    )
    _check(0 <= d.reprob <= 1, "data.reprob", "in [0, 1]", d.reprob)
    _check(0 <= d.hflip <= 1, "data.hflip", "in [0, 1]", d.hflip)
    _check(0 < d.scale_min <= 1, "data.scale_min", "in (0, 1]", d.scale_min)
    crop = d.eval_crop_pct
    _check(crop is None or 0.5 <= crop <= 2, "data.eval_crop_pct", "null or in [0.5, 2] (resize = img_size/crop)", crop)
    _check(d.eval_batch_size >= 1, "data.eval_batch_size", ">= 1", d.eval_batch_size)
    for key in ("max_train_images", "max_val_images"):
        _check(getattr(d, key) is None or getattr(d, key) >= 1, f"data.{key}", ">= 1 or null", getattr(d, key))
    grid = m.img_size // 16
    _check(t.size is None or t.size == grid, "token_labels.size", f"null or img_size/16 = {grid}", t.size)
    _check(t.dense_weight >= 0, "token_labels.dense_weight", ">= 0", t.dense_weight)
    _check(t.cls_weight >= 0, "token_labels.cls_weight", ">= 0", t.cls_weight)
    _check(
        t.public_crop_pct is None or 0 < t.public_crop_pct <= 2,
        "token_labels.public_crop_pct",
        "in (0, 2] or null",
        t.public_crop_pct,
    )
    _check(t.class_map in (None, "imagenet"), "token_labels.class_map", "null or imagenet", t.class_map)
    _check(0 <= t.label_smoothing < 1, "token_labels.label_smoothing", "in [0, 1)", t.label_smoothing)
    _check(0 < o.lr_base <= MAX_LR, "optim.lr_base", f"a positive number up to {MAX_LR}", o.lr_base)
    _check(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)", o.betas)
    _check(1e-12 <= o.eps <= 1e-2, "optim.eps", "in [1e-12, 1e-2]", o.eps)
    _check(s.epochs >= 1, "schedule.epochs", ">= 1", s.epochs)
    _check(0 <= s.warmup_epochs <= s.epochs, "schedule.warmup_epochs", f"in [0, epochs={s.epochs}]", s.warmup_epochs)
    _check(0 <= s.warmup_lr <= MAX_LR, "schedule.warmup_lr", f"in [0, {MAX_LR}]", s.warmup_lr)
    _check(0 <= s.min_lr <= MAX_LR, "schedule.min_lr", f"in [0, {MAX_LR}]", s.min_lr)
    _check(s.cooldown_epochs >= 0, "schedule.cooldown_epochs", ">= 0", s.cooldown_epochs)
    _check(s.shape in ("step", "reference"), "schedule.shape", "step or reference", s.shape)
    _check(tr.batch_size >= 1, "train.batch_size", ">= 1", tr.batch_size)
    _check(tr.accumulation >= 1, "train.accumulation", ">= 1", tr.accumulation)
    _check(tr.amp in ("bf16", "fp16", "none"), "train.amp", "one of bf16, fp16, none", tr.amp)
    modes = ", ".join(COMPILE_MODES)
    _check(tr.compile_mode in COMPILE_MODES, "train.compile_mode", f"one of {modes}", tr.compile_mode)
    _check(0 < tr.ema_decay < 1, "train.ema_decay", "in (0, 1)", tr.ema_decay)
    _check(tr.clip_grad is None or tr.clip_grad > 0, "train.clip_grad", "> 0 or null", tr.clip_grad)
    _check(tr.log_every >= 1, "train.log_every", ">= 1", tr.log_every)
    _check(tr.max_bad_steps >= 1, "train.max_bad_steps", ">= 1", tr.max_bad_steps)
    _check(tr.max_steps is None or tr.max_steps >= 1, "train.max_steps", ">= 1 or null", tr.max_steps)
    _check(c.keep_last >= 1, "checkpoint.keep_last", ">= 1", c.keep_last)
    _check(c.every_steps >= 0, "checkpoint.every_steps", ">= 0", c.every_steps)
    _check(c.eval_every >= 1, "checkpoint.eval_every", ">= 1", c.eval_every)
    _check(all(e >= 1 for e in c.milestones), "checkpoint.milestones", "epochs >= 1", c.milestones)
    name, key = (c.run_name, "checkpoint.run_name") if c.run_name is not None else (cfg.recipe, "recipe (the run name)")
    _check(bool(RUN_NAME.fullmatch(name)) and ".." not in name, key, RUN_NAME_RULE, name)


def check_peak_lr(cfg: RunConfig, peak_lr: float, global_batch: int) -> None:
    """Refuse a run whose peak LR (lr_base scaled to its real global batch) is below min_lr or warmup_lr: its warmup
    would fall and its "cosine" climb."""
    s = cfg.schedule
    for key, floor in (("schedule.min_lr", s.min_lr), ("schedule.warmup_lr", s.warmup_lr)):
        if peak_lr < floor:
            raise VoloError(
                f"Peak LR {peak_lr:.3g} (optim.lr_base={cfg.optim.lr_base:g} x global batch {global_batch} / 1024) is "
                f"below {key}={floor:g}, so the schedule would rise while decaying; raise optim.lr_base (or the "
                f"batch) or lower {key}."
            )


def warn_plain_production(cfg: RunConfig) -> None:
    """Warn when a production recipe (d1_224 ... d5_512) runs without a token-label store: it would train its whole
    schedule on plain labels, which the recipe's numbers do not describe."""
    if cfg.token_labels.label_root is None and re.fullmatch(r"d\d_\d+", cfg.recipe):
        warnings.warn(
            f"Recipe {cfg.recipe} runs {cfg.schedule.epochs} epochs on plain labels: token_labels.label_root is not "
            "set. Its reference results need token labels; make a store with `volo label` and pass "
            "--set token_labels.label_root=STORE (or ignore this for a deliberate plain-label run).",
            stacklevel=2,
        )
