"""What a long run does when something breaks: name the rank that stopped answering, stop on a run of NaN steps,
report a failed checkpoint write on every rank, and warn about a dangling `latest` pointer.

The trainer calls these at four points (see docs/reliability.md):
    with guard_collectives(dist): ...             around the whole run: a collective that times out or loses a peer
                                                  becomes one VoloError naming the rank(s) whose heartbeat stalled
    guard.update(stats.skipped) / guard.tripped() after every step / at log steps: N consecutive non-finite steps
    save_checkpoint_together(manager, ckpt, ...)  instead of `manager.save(...)` + `barrier()`
    dangling_latest_warning(directory)            before scanning checkpoints on resume

Heartbeats: every rank runs a daemon thread that increments `volo/heartbeat/<restart>/<rank>` in the job's TCPStore
(MASTER_ADDR:MASTER_PORT; under torchrun the agent hosts it, so it outlives any worker) once per second. A rank
blocked in a collective keeps beating (the wait releases the GIL); a rank that is stopped (SIGSTOP), frozen holding
the GIL, or dead does not. When a collective fails, the surviving ranks read the counters twice, a few beats
apart, and name the ranks whose counter did not move.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as tdist

from volo.distributed.process_group import DistInfo, all_reduce_max, broadcast_object
from volo.errors import VoloError
from volo.training.checkpoint_names import checkpoint_name

HEARTBEAT_INTERVAL_S = 1.0
"""Seconds between two heartbeats of a rank."""
"""Consecutive skipped (NaN/inf) optimiser steps after which a run stops."""
_COLLECTIVE_HINTS = ("gloo", "nccl", "timed out", "timeout", "connection closed", "connection reset", "broken pipe")


# -- heartbeats and collective failures -----------------------------------------------------------------------
class Heartbeat:
    """A daemon thread bumping this rank's counter in the job's store every `interval_s` seconds."""

    def __init__(self, store, rank: int, world_size: int, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.store, self.rank, self.world_size, self.interval_s = store, rank, world_size, interval_s
        self.prefix = f"volo/heartbeat/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="volo-heartbeat", daemon=True)

    @classmethod
    def start(cls, dist: DistInfo, interval_s: float = HEARTBEAT_INTERVAL_S) -> Heartbeat | None:
        """A running heartbeat for a distributed job (None for one process or when the store cannot be reached)."""
        if not dist.distributed or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            return None
        try:
            store = tdist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                is_master=False,
                timeout=timedelta(seconds=10),
                wait_for_workers=False,
            )
        except (RuntimeError, ValueError):
            return None
        beat = cls(store, dist.rank, dist.world_size, interval_s)
        beat.bump()
        beat._thread.start()
        return beat

    def key(self, rank: int) -> str:
        return f"{self.prefix}/{rank}"

    def bump(self) -> None:
        with self._lock:
            self.store.add(self.key(self.rank), 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.bump()
            except RuntimeError:  # the store went away (job ending): nothing left to report to
                return

    def counters(self) -> list[int]:
        """Heartbeat count of every rank (0 for a rank that never beat)."""
        with self._lock:
            return [int(self.store.add(self.key(r), 0)) for r in range(self.world_size)]

    def stalled_ranks(self, beats: float = 3.0) -> list[int]:
        """Ranks whose counter does not move over `beats` heartbeat intervals (this rank excluded)."""
        before = self.counters()
        time.sleep(beats * self.interval_s)
        after = self.counters()
        return [r for r in range(self.world_size) if r != self.rank and after[r] == before[r]]

    def stop(self) -> None:
        self._stop.set()


def is_collective_failure(err: BaseException) -> bool:
    """True for errors raised by a collective whose peer timed out, vanished or closed its connection."""
    if isinstance(err, tdist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(hint in text for hint in _COLLECTIVE_HINTS)


def collective_failure_error(err: BaseException, dist: DistInfo, beat: Heartbeat | None) -> VoloError:
    """The one-line error for a failed collective, naming the rank(s) that stopped answering when known."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    try:
        stalled = beat.stalled_ranks() if beat is not None else None
    except RuntimeError:
        stalled = None
    if stalled:
        who = f"Rank {stalled[0]}" if len(stalled) == 1 else "Ranks " + ", ".join(map(str, stalled))
        return VoloError(
            f"{who} of {dist.world_size} stopped answering (no heartbeat), so a collective on rank "
            f"{dist.rank} failed after the process-group timeout ({first}); check that process and its host "
            "(stopped, swapping, hung data loader, dead GPU), then relaunch with --resume auto."
        )
    return VoloError(
        f"A collective on rank {dist.rank} of {dist.world_size} failed ({first}); every other rank still answers, "
        "so look for the first error in the other ranks' logs, then relaunch with --resume auto."
    )


@contextmanager
def guard_collectives(dist: DistInfo) -> Iterator[Heartbeat | None]:
    """Run the body with a heartbeat; a failed collective leaves as a VoloError naming the silent rank.

    The process group is destroyed before the error leaves, so a `teardown()` barrier cannot hang on the dead peer.
    """
    beat = Heartbeat.start(dist)
    try:
        yield beat
    except Exception as err:
        if isinstance(err, VoloError) or not dist.distributed or not is_collective_failure(err):
            raise
        error = collective_failure_error(err, dist, beat)
        if tdist.is_initialized():
            with contextlib.suppress(Exception):  # best effort: the group is already broken
                tdist.destroy_process_group()
        raise error from None
    finally:
        if beat is not None:
            beat.stop()


# -- NaN / inf steps ------------------------------------------------------------------------------------------
class BadStepGuard:
    """Counts consecutive skipped steps on the device (no host sync per step); checked at log steps."""

    def __init__(self, limit: int, device: torch.device | str = "cpu"):
        if limit < 1:
            raise VoloError(f"The limit of consecutive bad steps must be >= 1, got {limit}.")
        self.limit = limit
        self.run = torch.zeros((), device=device)
        """() float32: skipped steps in a row up to the newest step (0 after any good step)."""

    def update(self, skipped: torch.Tensor) -> None:
        """`skipped`: () float, 1.0 when this step's gradients were non-finite (see `volo.training.step`)."""
        self.run = (self.run + 1.0) * skipped.to(self.run.device, torch.float32).reshape(())

    def consecutive(self) -> int:
        """The longest current run over all ranks (one all_reduce: call it where the trainer syncs anyway)."""
        return int(all_reduce_max(self.run.detach().clone().reshape(1)).item())

    def tripped(self) -> bool:
        return self.consecutive() >= self.limit

    def error(self, step: int, checkpoint: Path | None) -> VoloError:
        saved = f"a checkpoint was written to {checkpoint}" if checkpoint else "no checkpoint could be written"
        return VoloError(
            f"{self.limit} optimiser steps in a row (up to step {step}) had a NaN or infinite loss and were skipped; "
            f"{saved}. Try a lower optim.lr_base, train.clip_grad=1.0, train.amp=bf16 instead of fp16, or check "
            "the data and token labels for broken files, then resume with --resume auto."
        )


# -- checkpoint writes ----------------------------------------------------------------------------------------
@dataclass
class SaveFailure:
    """Why a checkpoint write failed (sent from rank 0 to every rank)."""

    target: str
    reason: str
    previous: str | None


def save_failure_error(failure: SaveFailure) -> VoloError:
    what = "weights file" if failure.target.endswith(".safetensors") else "checkpoint"
    kept = f"the previous {what} {failure.previous} is intact" if failure.previous else f"no earlier {what} exists"
    return VoloError(
        f"Could not write {what} {failure.target} ({failure.reason}); {kept}. Free disk space or fix the "
        "folder's permissions (checkpoint.output_dir), then relaunch with --resume auto."
    )


def write_together(write, target: Path | str, previous: Path | str | None) -> Path | None:
    """Rank 0 calls `write()` (other ranks pass None); every rank returns its path together, or the same VoloError.

    Writes are atomic, so a failure (no space, permission denied, read-only file system; torch's and safetensors'
    own errors for these are turned back into the `OSError` by `volo.atomic`) leaves `previous` untouched.
    """
    failure, path = None, None
    if write is not None:
        try:
            path = write()
        except OSError as err:
            reason = f"{type(err).__name__}: {err.strerror or err}"
            failure = SaveFailure(str(target), reason, str(previous) if previous else None)
    failure, written = broadcast_object((failure, str(path) if path is not None else None))
    if failure is not None:
        raise save_failure_error(failure)
    return Path(written) if written else None


def save_checkpoint_together(manager, ckpt, epoch_end: bool, is_best: bool = False) -> Path | None:
    """Rank 0 writes `ckpt` (other ranks pass None); every rank returns its path together, or the same VoloError.

    `manager` is a `volo.training.checkpoint.CheckpointManager`; a write is atomic, so a failure (no space,
    permission denied, read-only file system) leaves the previous checkpoint and the `latest` pointer untouched.
    """
    if ckpt is None:
        return write_together(None, "", None)
    previous = next((p for p in manager.candidates() if manager.is_good(p)), None) if manager.dir.is_dir() else None
    target = manager.dir / checkpoint_name(ckpt.progress, epoch_end)
    return write_together(lambda: manager.save(ckpt, epoch_end=epoch_end, is_best=is_best), target, previous)


def dangling_latest_warning(directory: Path) -> str | None:
    """A warning when `<directory>/latest` names a checkpoint that is missing (resume then scans the folder)."""
    pointer = Path(directory) / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return f"The checkpoint pointer {pointer} cannot be read; resuming from the newest valid checkpoint instead."
    if not name or not (Path(directory) / name).is_file():
        return (
            f"The checkpoint pointer {pointer} names {name or 'nothing'}, which does not exist; resuming from the "
            "newest valid checkpoint instead."
        )
    return None


# -- resuming into another model --------------------------------------------------------------------------------
def check_resume_model(
    weights: dict[str, torch.Tensor], saved_config: dict, model: torch.nn.Module, path: Path
) -> None:
    """Raise a VoloError when a checkpoint's `weights` do not fit the run's `model` (another variant, size, heads).

    `saved_config` is the checkpoint's resolved config (`TrainingCheckpoint.config`), used to say what it holds.
    """
    state = model.state_dict()
    differing = sorted(k for k in state if k not in weights or tuple(weights[k].shape) != tuple(state[k].shape))
    differing += sorted(set(weights) - set(state))
    if not differing:
        return
    saved = saved_config.get("model", {}) if isinstance(saved_config, dict) else {}
    what = f"{saved.get('name', 'another model')} @{saved.get('img_size', '?')} px with {saved.get('num_classes', '?')}"
    raise VoloError(
        f"{path} holds {what} classes, which does not fit this run's model (first differing weight: {differing[0]}); "
        "resume it with the recipe and --set values it was trained with, or start a new run folder (--name)."
    )
