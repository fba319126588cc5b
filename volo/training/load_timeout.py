"""A bound on the wait for one batch: a file that blocks forever (a FIFO put in place of an image, a hung network
mount, a stuck worker) ends the run with one line instead of hanging it.

Every rank, single-process runs included, wraps its loaders in `timed(...)`: before asking for the next batch it arms
a one-shot `ITIMER_REAL`; if the batch is not there within `VOLO_LOAD_TIMEOUT_S` seconds (default 600) the SIGALRM
handler raises in the main thread. That interrupts a blocking `open()` or `read()` in the process itself (workers=0:
the system call fails with EINTR and the handler's exception propagates) as well as the wait for a DataLoader worker,
and names the file the main thread was opening when there is one. The DataLoader workers (which ignore SIGTERM) are
SIGKILLed then, since one stuck in `open()` would otherwise block the trainer's exit. A multi-rank run also has the
collective timeout and heartbeats (`faults.py`) for a rank that hangs anywhere else.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from volo.errors import VoloError

DEFAULT_TIMEOUT_S = 600.0


class _Expired(BaseException):
    """Raised by the alarm handler; a BaseException so that no `except Exception` in a decoder swallows it."""


def load_timeout_s() -> float:
    raw = os.environ.get("VOLO_LOAD_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise VoloError(f"VOLO_LOAD_TIMEOUT_S={raw!r} must be a positive number of seconds.")
    return value


def _file_in(frame) -> str | None:
    """The innermost local `path`/`filename`/`fp` naming a file in the interrupted call stack."""
    while frame is not None:
        for name in ("path", "filename", "fp", "file"):
            v = frame.f_locals.get(name)
            if isinstance(v, (str, Path)) and str(v):
                return str(v)
        frame = frame.f_back
    return None


def _kill_workers() -> None:
    """SIGKILL this process's multiprocessing children (DataLoader workers): they ignore SIGTERM (the trainer
    stops them itself), and one blocked opening a FIFO would otherwise keep the exiting trainer waiting forever."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler raises for a killed worker
    try:
        for child in multiprocessing.active_children():
            child.kill()
            child.join(timeout=10)
    finally:
        signal.signal(signal.SIGCHLD, previous)


def timed(batches: Iterable, what: str, timeout_s: float | None = None) -> Iterator:
    """Yield from `batches`, raising a VoloError when one batch takes longer than `timeout_s` to arrive."""
    limit = load_timeout_s() if timeout_s is None else timeout_s
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield from batches
        return
    where: dict[str, str | None] = {}

    def expired(signum, frame):
        where["file"] = _file_in(frame)
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expired)
    it = iter(batches)
    try:
        while True:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                batch = next(it)
            except StopIteration:
                return
            except _Expired:
                _kill_workers()
                file = f" (it was opening {where['file']})" if where.get("file") else ""
                raise VoloError(
                    f"The {what} loader produced no batch for {limit:g} s{file}: a file that blocks on open or read "
                    "(a FIFO or device in the dataset, a hung network mount) or a stuck worker. Fix the dataset, "
                    "then relaunch with --resume auto; VOLO_LOAD_TIMEOUT_S sets the limit."
                ) from None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            yield batch
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
