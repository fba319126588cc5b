"""Graceful stop: SIGUSR2 (Slurm's early warning), SIGTERM (scancel, time limit, preemption) or SIGINT (Ctrl-C) ask
the run to checkpoint and exit; a second Ctrl-C aborts at once.

The handler only sets a flag. After EVERY optimiser step the ranks agree on it (`StopVote`: one all-reduce MAX of a
CPU tensor over a gloo group, so no GPU synchronisation), so every rank stops at the same step boundary, within one
step of the signal: a D5 step (~0.85 s) plus the checkpoint write fit in Slurm's default KillWait of 30 s.

Exit codes of `volo train` (docs/cluster.md):
    0  EXIT_DONE      the run finished (weights/final.safetensors written)
    3  EXIT_STOPPED   stopped by a signal after writing a checkpoint; relaunch with --resume auto
                      (under torchrun 0 instead: torchrun reports any other worker code as a crash)
    1  EXIT_FAILED    the run failed (an error message, a failed checkpoint write, a crash)
    2                 bad input (an unknown recipe, a wrong --set key or type), nothing ran
DataLoader worker processes ignore the stop signals (`ignore_stop_signals`): Slurm signals every process of a step,
and a worker killed by SIGTERM would end the run with "DataLoader worker ... killed by signal".
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import torch

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_STOPPED = 3

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)) if s is not None)


def stopped_exit_code() -> int:
    """EXIT_STOPPED, or 0 under torchrun (its agent turns a non-zero worker exit into a ChildFailedError)."""
    return 0 if "TORCHELASTIC_RUN_ID" in os.environ else EXIT_STOPPED


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """Make the calling process ignore SIGTERM/SIGINT/SIGUSR2 (a DataLoader `worker_init_fn`): the main process
    decides when to stop and ends its workers itself. Then unblocks them (see `stop_signals_blocked`): one that
    arrived while the worker started is dropped."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_blocked():
    """Block the stop signals in this thread while DataLoader workers are forked. A worker starts with torch's C
    handler for SIGTERM (print, then die) until its `worker_init_fn` runs: a SIGTERM from Slurm in that window
    killed it ("DataLoader worker ... is killed by signal: Terminated") and with it the rank. Forked workers
    inherit the blocked mask; `ignore_stop_signals` lifts it once the signals are ignored."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class StopFlag:
    """SIGTERM / SIGUSR2 / SIGINT set a flag (the first signal's name is kept); a second SIGINT raises
    KeyboardInterrupt, so a user who really wants out gets out."""

    def __init__(self):
        self.flag = False
        self.signal_name: str | None = None
        self.step = 0
        """The last finished step (the trainer keeps it current), reported when a signal arrives."""
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:
        if self.flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.flag:
            self.signal_name = signal.Signals(signum).name
            print(
                f"volo train: got {self.signal_name} after step {self.step}: checkpointing at the next step boundary",
                flush=True,
            )
        self.flag = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class StopVote:
    """Every rank's stop flag, agreed on after each step: MAX over ranks of a CPU tensor on a gloo group.

    NCCL jobs get a separate gloo group for it, so the vote never waits for the GPU; CPU jobs use the default
    (gloo) group. Call `poll()` at the same point of every step on every rank.
    """

    def __init__(self, stop: StopFlag, distributed: bool, backend: str | None):
        import torch.distributed as tdist

        self.stop, self.distributed = stop, distributed
        self.group = tdist.new_group(backend="gloo") if distributed and backend != "gloo" else None
        self.box = torch.zeros(1)

    def poll(self) -> bool:
        """True on every rank when any rank got a stop signal."""
        if not self.distributed:
            return self.stop.flag
        import torch.distributed as tdist

        self.box.fill_(1.0 if self.stop.flag else 0.0)
        tdist.all_reduce(self.box, op=tdist.ReduceOp.MAX, group=self.group)
        return bool(self.box.item())
