"""One trainer per run folder: an OS lock that dies with its process, and no silent restart over an old run.

`<run>/.lock` is held with `fcntl.flock` (exclusive, non-blocking) by rank 0 for the whole run. The kernel drops
it when the process exits for any reason, SIGKILL included, so a crashed run never leaves the folder stuck. The
file holds the holder's pid and host, which a second trainer names in its one-line refusal. (On NFS, Linux maps
flock to POSIX byte-range locks; Lustre needs its `flock` mount option.)

A run folder that already holds a run (checkpoints, metrics or weights) is only continued with `--resume` or
started again from scratch with `--overwrite`, which deletes those outputs first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path

from volo.distributed.process_group import DistInfo, broadcast_object
from volo.errors import VoloError

LOCK_NAME = ".lock"
OUTPUTS = ("checkpoints", "metrics", "weights", "plots", "result.json", "config.yaml")
"""What a run writes into its folder (`--overwrite` deletes exactly these)."""


class RunFolderLock:
    """An exclusive flock on `<run_dir>/.lock`; `acquire()` raises a VoloError naming the holder's pid and host."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise VoloError(
                f"Cannot create the run folder's lock {self.path} ({type(err).__name__}: {err.strerror or err}); "
                "fix the folder's permissions or pick another --out."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise VoloError(
                    f"Cannot lock run folder {self.run_dir} ({err.strerror or err}): its file system does not "
                    "support flock (Lustre: mount with -o flock); use an output folder on one that does."
                ) from None
            raise VoloError(
                f"Run folder {self.run_dir} is in use by another trainer ({holder}); wait for it to finish or stop "
                "it, or give this run another --name."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid and host unknown"


def has_previous_run(run_dir: Path) -> bool:
    """True when `run_dir` holds checkpoints, metric rows or weights of an earlier run."""
    return any((run_dir / name).exists() for name in ("checkpoints", "metrics", "weights", "result.json"))


def check_fresh_start(run_dir: Path, overwrite: bool) -> None:
    """Called for a run started without --resume: refuse an existing run folder, or clear it with `overwrite`."""
    if not has_previous_run(run_dir):
        return
    if not overwrite:
        raise VoloError(
            f"Run folder {run_dir} already holds a run; continue it with --resume auto, start it again from scratch "
            "with --overwrite (deletes its checkpoints, metrics and weights), or pick another --name."
        )
    for name in OUTPUTS:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def claim_run_folder(run_dir: Path, dist: DistInfo, fresh: bool, overwrite: bool) -> RunFolderLock | None:
    """Rank 0 locks `run_dir` (and, for a `fresh` start, refuses or clears an old run); every rank gets the same
    VoloError when that fails. Returns the held lock on rank 0, None elsewhere."""
    lock, error = None, None
    if dist.is_main:
        try:
            lock = RunFolderLock(run_dir).acquire()
            if fresh:
                check_fresh_start(run_dir, overwrite)
        except VoloError as err:
            error = str(err)
            if lock is not None:
                lock.release()
                lock = None
    error = broadcast_object(error)
    if error is not None:
        raise VoloError(error)
    return lock
