"""Training checkpoints: atomic writes, keep-last-k + best + milestones, a `latest` pointer, validated resume.

Layout inside `<run>/checkpoints/`:
    epoch0003_step000000120.pt   end of an epoch (epoch numbers are 1-based: "3 epochs done")
    step000000130.pt             inside an epoch (checkpoint.every_steps)
    best.pt                      hard link to (or copy of) the best epoch checkpoint
    <name>.pt.sha256             the SHA-256 of each of the above (`checkpoint_integrity.py`)
    latest                       text file naming the newest checkpoint
Each file is a dict of tensors and plain types (see `TrainingCheckpoint`), written to a temp file in the same folder,
flushed and fsynced, renamed over the target with `os.replace`, and the folder fsynced: a crash leaves either the old
or the new file, never half of one. Everything is read back with `torch.load(weights_only=True)`, after its checksum
is verified; a file that fails either, or holds a field of the wrong type, is damaged: resume skips it with a
warning and pruning never counts it as one of the `keep_last` kept.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from volo.atomic import atomic_write, atomic_write_text, fsync_dir, remove_orphan_temps
from volo.errors import VoloError
from volo.safe_load import safe_torch_load
from volo.training.checkpoint_integrity import check_fields, checksum_path, verify_checksum, write_checksum
from volo.training.checkpoint_names import EPOCH_RE, checkpoint_name, step_of

FORMAT = "volo-train-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "model", "optimizer", "progress", "config", "world_size")


@dataclass
class Progress:
    """Where training stands; plain ints/floats so it survives weights_only loading."""

    epoch: int = 0
    """Index of the epoch in progress (0-based); equals the number of finished epochs at an epoch end."""
    step: int = 0
    """Optimiser steps done in total (the schedule position)."""
    epoch_consumed: int = 0
    """Samples of `epoch` already used, counted over all ranks (the sampler position)."""
    images_seen: int = 0
    """Training images processed in total."""
    skipped_steps: int = 0
    """Steps skipped because the loss was NaN or infinite."""
    best_top1: float = -1.0
    best_epoch: int = -1
    epoch_loss_sum: float = 0.0
    """Sum of this epoch's step losses so far (mean over ranks), so the epoch's train_loss survives a resume."""
    epoch_steps: int = 0
    """Steps of `epoch` done so far (the divisor of `epoch_loss_sum`)."""

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> Progress:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class TrainingCheckpoint:
    """Everything needed to continue a run exactly."""

    model: dict[str, torch.Tensor]
    optimizer: dict
    progress: Progress
    config: dict
    """The resolved `RunConfig.to_dict()`."""
    world_size: int
    ema: dict[str, torch.Tensor] | None = None
    scaler: dict | None = None
    rng: list[dict] = field(default_factory=list)
    """Per-rank RNG states (`volo.training.rng.capture_rng`), index = rank."""
    sampler: dict = field(default_factory=dict)
    loader: list[dict] = field(default_factory=list)
    """Per-rank training-loader positions (`BatchLoader.state_dict`, `pack_loader_state`), index = rank."""

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "ema": self.ema,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "progress": self.progress.to_dict(),
            "rng": self.rng,
            "sampler": self.sampler,
            "loader": self.loader,
            "config": self.config,
            "world_size": self.world_size,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "checkpoint") -> TrainingCheckpoint:
        missing = [k for k in REQUIRED if k not in d]
        if missing or d.get("format") != FORMAT:
            raise VoloError(f"{source} is not a volo training checkpoint (missing {missing or ['format']}).")
        check_fields(d, source)
        if d["version"] > VERSION:
            raise VoloError(f"{source} was written by a newer volo (format {d['version']}); upgrade volo to resume.")
        return cls(
            model=d["model"],
            optimizer=d["optimizer"],
            progress=Progress.from_dict(d["progress"]),
            config=d["config"],
            world_size=d["world_size"],
            ema=d.get("ema"),
            scaler=d.get("scaler"),
            rng=list(d.get("rng") or []),
            sampler=dict(d.get("sampler") or {}),
            loader=list(d.get("loader") or []),
        )


_BYTES = "__bytes__"


def pack_loader_state(state: dict) -> dict:
    """A loader's `state_dict()` made `weights_only`-safe: bytes values (DALI's blob) become (n,) uint8 tensors."""
    return {
        k: {_BYTES: torch.from_numpy(np.frombuffer(v, dtype=np.uint8).copy())} if isinstance(v, bytes) else v
        for k, v in state.items()
    }


def unpack_loader_state(state: dict) -> dict:
    """Inverse of `pack_loader_state`."""
    return {
        k: bytes(v[_BYTES].numpy().tobytes()) if isinstance(v, dict) and _BYTES in v else v for k, v in state.items()
    }


# -- atomic file writes ---------------------------------------------------------------------------------------
def atomic_torch_save(obj, path: str | Path, checksum: bool = False) -> Path:
    """torch.save, atomically (`volo.atomic`); with `checksum`, its `.sha256` is written before it appears."""
    path = Path(path)
    record = (lambda tmp: write_checksum(tmp, path)) if checksum else None
    return atomic_write(path, lambda f: torch.save(obj, f), before_replace=record)


# -- the checkpoint folder ----------------------------------------------------------------------------------
class CheckpointManager:
    """Writes, prunes and finds the checkpoints of one run folder (rank 0 writes; it holds the run-folder lock)."""

    def __init__(self, directory: str | Path, keep_last: int = 3, milestones: list[int] | tuple[int, ...] = ()):
        self.dir = Path(directory)
        self.keep_last = keep_last
        self.milestones = set(milestones)
        self._good: set[str] = set()
        """Names verified whole in this process (written by it, or checked once), not checked again."""

    def save(self, ckpt: TrainingCheckpoint, epoch_end: bool, is_best: bool = False) -> Path:
        """Write `ckpt` and its checksum, update `latest` (and `best.pt`), prune old ones. Returns the file written."""
        path = atomic_torch_save(ckpt.to_dict(), self.dir / checkpoint_name(ckpt.progress, epoch_end), checksum=True)
        self._good.add(path.name)
        atomic_write_text(path.name + "\n", self.dir / "latest")
        if is_best:
            self._link_best(path)
        self.prune(path)
        return path

    def _link_best(self, path: Path) -> None:
        best = self.dir / "best.pt"
        tmp = self.dir / f".best.pt.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        shutil.copyfile(checksum_path(path), checksum_path(tmp))
        os.replace(checksum_path(tmp), checksum_path(best))
        os.replace(tmp, best)
        fsync_dir(self.dir)

    def candidates(self) -> list[Path]:
        """Regular checkpoints (not best.pt), newest (highest step) first; epoch ends before mid-epoch at a tie."""
        files = [p for p in self.dir.glob("*.pt") if p.name != "best.pt" and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (step_of(p), p.name.startswith("epoch")), reverse=True)

    def is_good(self, path: Path) -> bool:
        """Whether `path` is a whole checkpoint: its checksum matches (or, without one, it loads with valid fields)."""
        if path.name in self._good:
            return True
        try:
            if verify_checksum(path) is None:
                load_checkpoint(path)
        except (VoloError, OSError):
            return False
        self._good.add(path.name)
        return True

    def prune(self, written: Path | None = None) -> list[Path]:
        """Keep the newest `keep_last` good checkpoints (milestone epochs too); delete the others by content.

        A file named after a later step than `written` (the checkpoint just saved) belongs to a timeline this run
        left (it resumed from an earlier checkpoint, e.g. because that one was damaged) and is deleted with a
        warning; a damaged file never counts as kept. Orphan temp files of killed saves go too.
        """
        current = step_of(written) if written is not None else None
        removed, kept = [], 0
        for p in self.candidates():
            stale = current is not None and step_of(p) > current
            if stale or not self.is_good(p):
                why = "newer than this run's position" if stale else "damaged"
                warnings.warn(f"Removing checkpoint {p} ({why}).", stacklevel=2)
            elif self._is_milestone(p) or kept < self.keep_last:
                kept += not self._is_milestone(p)
                continue
            self._remove(p)
            removed.append(p)
        for orphan in self.dir.glob("*.pt.sha256"):
            if not orphan.with_name(orphan.name[: -len(".sha256")]).exists():
                orphan.unlink(missing_ok=True)
        remove_orphan_temps(self.dir)
        return removed

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
        self._good.discard(path.name)

    def _is_milestone(self, path: Path) -> bool:
        m = EPOCH_RE.match(path.name)
        return bool(m) and int(m.group(1)) in self.milestones

    def latest_valid(self) -> tuple[Path, TrainingCheckpoint] | None:
        """The newest checkpoint that verifies, loads and is complete; damaged ones are skipped with a warning."""
        order = self.candidates()  # `latest` names order[0]; scanning also survives a lost pointer
        from volo.training.faults import dangling_latest_warning

        if (note := dangling_latest_warning(self.dir)) is not None:
            warnings.warn(note, stacklevel=2)
        for path in order:
            try:
                found = path, load_checkpoint(path)
            except VoloError as err:
                warnings.warn(f"Skipping damaged checkpoint {path}: {err}", stacklevel=2)
                continue
            self._good.add(path.name)
            return found
        return None


def load_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read a training checkpoint with weights_only=True; a damaged or foreign file raises `VoloError`."""
    path = Path(path)
    if not path.is_file():
        raise VoloError(f"Checkpoint {path} does not exist; pass --resume auto or the path of a .pt checkpoint.")
    if verify_checksum(path) is None:
        note = f"{path} has no checksum file beside it (written by an older volo?); loading it unverified."
        warnings.warn(note, stacklevel=2)
    obj = safe_torch_load(path, "it is damaged or not a volo checkpoint.")  # names a refused pickled global
    if not isinstance(obj, dict):
        raise VoloError(f"{path} is not a volo training checkpoint (it holds a {type(obj).__name__}).")
    return TrainingCheckpoint.from_dict(obj, path)


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> tuple[Path, TrainingCheckpoint] | None:
    """`--resume auto` -> newest valid checkpoint of the run (None when there is none); a path -> that file."""
    if not resume:
        return None
    if resume == "auto":
        if not checkpoint_dir.is_dir():
            return None
        return CheckpointManager(checkpoint_dir).latest_valid()
    path = Path(resume)
    if path.is_dir():
        found = CheckpointManager(path / "checkpoints" if (path / "checkpoints").is_dir() else path).latest_valid()
        if found is None:
            raise VoloError(f"--resume {resume}: no valid checkpoint in that folder.")
        return found
    return path, load_checkpoint(path)
