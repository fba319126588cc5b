"""Is a checkpoint file what it claims to be? A SHA-256 beside every checkpoint, field types checked after loading.

`<name>.pt.sha256` holds the digest of `<name>.pt` in `sha256sum` format (so `sha256sum -c` checks it by hand). It is
written before the checkpoint is renamed into place, so a file without its digest is either older than checksums
or the survivor of a crash between the two renames; a file whose digest differs (one flipped bit is enough) is
damaged. Loading also checks every field's type: a file that loads but holds `version: "x"` or `optimizer: {}` is
damaged too, never a traceback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from volo.atomic import atomic_write_text
from volo.errors import VoloError

SUFFIX = ".sha256"
_CHUNK = 8 << 20


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_checksum(data_file: Path, named: Path) -> Path:
    """Write the digest of `data_file` (a temp file about to become `named`) to `named`'s `.sha256`, atomically."""
    return atomic_write_text(f"{file_sha256(data_file)}  {named.name}\n", checksum_path(named))


def verify_checksum(path: Path) -> bool | None:
    """True when `path` matches its recorded digest, None when it has none; raises VoloError on a mismatch."""
    record = checksum_path(path)
    if not record.is_file():
        return None
    try:
        expected = record.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        note = f"{path}: its checksum file {record.name} is unreadable; the checkpoint cannot be trusted."
        raise VoloError(note) from None
    actual = file_sha256(path)
    if actual != expected:
        raise VoloError(
            f"{path} does not match its recorded SHA-256 ({actual[:12]}... vs {expected[:12]}...): the file changed "
            "after it was written (a flipped bit, a partial copy): it is damaged."
        )
    return True


def _expect(ok: bool, source, field: str, want: str, value) -> None:
    if not ok:
        got = type(value).__name__ if not isinstance(value, (int, float, str)) else repr(value)[:40]
        raise VoloError(f"{source} is damaged: field {field} must be {want}, got {got}.")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor_dict(d) -> bool:
    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def check_fields(d: dict, source) -> None:
    """Raise VoloError when a loaded checkpoint dict has a field of the wrong type (see `TrainingCheckpoint`)."""
    _expect(_is_int(d["version"]) and d["version"] >= 1, source, "version", "an integer >= 1", d["version"])
    _expect(_is_int(d["world_size"]) and d["world_size"] >= 1, source, "world_size", "an integer >= 1", d["world_size"])
    _expect(_tensor_dict(d["model"]), source, "model", "a non-empty dict of tensors", d["model"])
    ema = d.get("ema")
    _expect(ema is None or _tensor_dict(ema), source, "ema", "a dict of tensors or None", ema)
    opt = d["optimizer"]
    _expect(
        isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list),
        source,
        "optimizer",
        "an optimizer state dict (state, param_groups)",
        opt,
    )
    _expect(isinstance(d["config"], dict), source, "config", "a dict", d["config"])
    prog = d["progress"]
    _expect(isinstance(prog, dict), source, "progress", "a dict", prog)
    for key in ("epoch", "step", "epoch_consumed", "images_seen", "skipped_steps", "best_epoch", "epoch_steps"):
        if key in prog:
            _expect(_is_int(prog[key]) and prog[key] >= -1, source, f"progress.{key}", "an integer", prog[key])
    for key in ("best_top1", "epoch_loss_sum"):
        if key in prog:
            v = prog[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)  # NaN allowed: a skipped step's loss
            _expect(ok, source, f"progress.{key}", "a number", v)
    for key, kind in (("rng", list), ("sampler", dict), ("loader", list)):
        v = d.get(key)
        _expect(v is None or isinstance(v, kind), source, key, f"a {kind.__name__}", v)
    scaler = d.get("scaler")
    _expect(scaler is None or isinstance(scaler, dict), source, "scaler", "a dict or None", scaler)


def nonfinite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state` holding a NaN or an infinity."""
    bad = []
    for name, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad
