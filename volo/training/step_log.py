"""Step metric rows and the progress bar: every `log_every` steps one all-reduce and one host sync turn the
device-side sums into a row (loss parts, grad norm, lr, images/s, skipped steps, ETA) in `metrics/steps.*` and the
rank-0 tqdm bar, or with `train.progress=false` a printed line. Epochs count from 1 everywhere (the row's `epoch`
is the epoch in progress; epochs.csv's the epoch just finished)."""

from __future__ import annotations

import time

import torch

from volo.distributed.process_group import all_reduce_mean
from volo.training.checkpoint import Progress
from volo.training.metrics import MetricsLog


class StepLogger:
    def __init__(
        self,
        log: MetricsLog,
        progress: Progress,
        global_batch: int,
        total_steps: int,
        show_bar: bool,
        lines: bool = False,
    ):
        self.log, self.progress = log, progress
        self.global_batch, self.total_steps, self.show_bar = global_batch, total_steps, show_bar
        self.lines = lines
        """Print one line per row instead of the bar (`train.progress=false` on rank 0: readable Slurm logs)."""

    def bar(self, steps_per_epoch: int):
        """A tqdm bar over this epoch's steps starting at the current position (None on other ranks / disabled)."""
        if not self.show_bar:
            return None
        from tqdm import tqdm

        return tqdm(
            total=steps_per_epoch,
            initial=self.progress.epoch_consumed // self.global_batch,
            desc=f"epoch {self.progress.epoch + 1}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )

    def write(self, sums: torch.Tensor, n: int, grad_norm: torch.Tensor, lr: float, t0: float, bar) -> float:
        """`sums` (4,): loss, cls, tokens, skipped over the last `n` steps since `t0`; returns the new `t0`."""
        vals = all_reduce_mean(torch.cat([sums / n, grad_norm.reshape(1)])).tolist()
        now = time.perf_counter()
        ips = n * self.global_batch / max(now - t0, 1e-9)
        prog = self.progress
        prog.skipped_steps += round(vals[3] * n)
        eta_s = (self.total_steps - prog.step) * self.global_batch / max(ips, 1e-9)
        row = {
            "step": prog.step,
            "epoch": prog.epoch + 1,  # the epoch in progress, counted from 1 as in epochs.csv
            "lr": lr,
            "loss": vals[0],
            "cls_loss": vals[1],
            "token_loss": vals[2],
            "grad_norm": vals[4],
            "images_per_s": ips,
            "skipped_steps": prog.skipped_steps,
            "eta_s": eta_s,
        }
        self.log.write(row)
        if self.lines:
            print(
                f"volo train: epoch {prog.epoch + 1} step {prog.step}/{self.total_steps} loss {vals[0]:.4f} "
                f"lr {lr:.3g} grad_norm {vals[4]:.3g} {ips:.1f} img/s eta {eta_s / 60:.1f} min",
                flush=True,
            )
        if bar is not None:
            bar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}", eta=f"{eta_s / 60:.1f}m")
        return now
