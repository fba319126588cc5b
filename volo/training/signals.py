"""Graceful stop: SIGTERM (Slurm's time limit) or SIGUSR2 (`#SBATCH --signal`) ask the run to checkpoint and exit.

The handler only sets a flag; the training loop all-reduces it (MAX) at log steps, so every rank stops at the same
step, rank 0 writes a checkpoint, and `volo train` exits with code 3 (resume with `--resume auto`).
"""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """SIGTERM / SIGUSR2 set a flag; the loop checks it (all ranks agree) at log steps and saves before exiting."""

    def __init__(self):
        self.flag = False
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, getattr(signal, "SIGUSR2", None)):
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:
        self.flag = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
