"""The training loop: `train(config) -> RunResult`, from one CPU process to torchrun across nodes.

Order of a run: join the process group -> seed -> data -> model (fine-tune weights resized by `create_model`) ->
optimiser (LR scaled by the real global batch) -> resume -> DDP / compile -> epochs of optimiser steps
(`volo.training.step`), logging every `train.log_every` steps, evaluating and checkpointing each epoch (rank 0
writes) -> export weights -> plots.

Run folder `<checkpoint.output_dir>/<run_name>/`: config.yaml, metrics/{steps,epochs}.{jsonl,csv},
checkpoints/ (see checkpoint.py), weights/{final,best,final_ema}.safetensors (+ .json with the architecture and
class names), plots/{loss,lr,accuracy}.png, result.json, and `.lock`, held by rank 0 while the run lives
(`run_folder.py`). A resume drops the metric rows of steps it redoes and refuses a changed config
(`resume_config.py`) unless told otherwise.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist

from volo.atomic import remove_orphan_temps
from volo.distributed.process_group import DistInfo, all_reduce_mean, barrier, init_distributed
from volo.errors import VoloError
from volo.labeling.teacher_net import TimmTeacherNet, save_timm_weights
from volo.models.weights import save_weights
from volo.training.checkpoint import (
    CheckpointManager,
    Progress,
    TrainingCheckpoint,
    pack_loader_state,
    resolve_resume,
)
from volo.training.checkpoint_integrity import nonfinite
from volo.training.config import RunConfig, save_config
from volo.training.config_checks import check_peak_lr, warn_plain_production
from volo.training.data import TrainData, build_train_data, restore_loader
from volo.training.ema import ModelEma
from volo.training.evaluate import EvalResult, evaluate, share_rank0_buffers
from volo.training.faults import (
    BadStepGuard,
    check_resume_model,
    guard_collectives,
    save_checkpoint_together,
    write_together,
)
from volo.training.load_timeout import timed
from volo.training.loggers import RunLoggers, warn_cpu_amp
from volo.training.metrics import MetricsLog, drop_rows_after
from volo.training.model_setup import amp_dtype, build_model, wrap_for_steps
from volo.training.optim import BatchGeometry, build_optimizer, scaled_lr, set_lr
from volo.training.resume_config import check_resume_config
from volo.training.rng import capture_rng, restore_rng, seed_everything
from volo.training.run_folder import claim_run_folder
from volo.training.run_result import RunResult, run_metrics
from volo.training.schedule import build_schedule, total_epochs
from volo.training.signals import StopFlag, StopVote
from volo.training.speed import speed_settings
from volo.training.step import train_step
from volo.training.step_log import StepLogger


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.checkpoint.output_dir) / (cfg.checkpoint.run_name or cfg.recipe)


def train(
    cfg: RunConfig, resume: str | None = None, overwrite: bool = False, allow_config_change: bool = False
) -> RunResult:
    """Train as `cfg` says; `resume` is None, 'auto' (newest valid checkpoint of the run folder) or a path.

    Without `resume` an existing run folder is refused unless `overwrite` (which deletes its outputs first); a
    resume whose config differs from the checkpoint's is refused unless `allow_config_change`.
    """
    cfg.validate()
    dist = init_distributed()  # the group stays up for the caller (`volo train` tears it down)
    stop = StopFlag()
    lock = None
    try:
        # a peer that stops answering -> VoloError naming its rank
        with speed_settings(cfg.train.deterministic), guard_collectives(dist):
            lock = claim_run_folder(run_dir_of(cfg), dist, fresh=not resume, overwrite=overwrite)
            return _Run(cfg, dist, stop).run(resume, allow_config_change)
    finally:
        if lock is not None:
            lock.release()
        stop.restore()


class _Run:
    def __init__(self, cfg: RunConfig, dist: DistInfo, stop: StopFlag):
        self.cfg, self.dist, self.stop = cfg, dist, stop
        self.run_dir = run_dir_of(cfg)
        self.main = dist.is_main

    # -- setup ----------------------------------------------------------------------------------------------
    def setup(self, resuming: bool) -> None:
        """Data, model (from `model.init_checkpoint` unless resuming: the checkpoint brings the weights), optimiser,
        schedule, EMA and the guards."""
        cfg, dist = self.cfg, self.dist
        seed_everything(cfg.train.seed + dist.rank)
        self.geometry = BatchGeometry(dist.world_size, cfg.train.batch_size, cfg.train.accumulation)
        self.data: TrainData = build_train_data(cfg, dist, self.geometry.global_batch)
        m = cfg.model
        self.model = build_model(m, resuming).to(dist.device)
        if self.main and not resuming and m.init_checkpoint:
            notes = "; ".join(self.model.load_notes) or "every tensor as stored"
            print(f"volo train: model.init_checkpoint {m.init_checkpoint} loaded: {notes}", flush=True)
        self.model.set_grad_checkpointing(m.grad_checkpointing)
        self.ema = ModelEma(self.model, cfg.train.ema_decay) if cfg.train.ema else None
        self.peak_lr = scaled_lr(cfg.optim.lr_base, self.geometry)
        check_peak_lr(cfg, self.peak_lr, self.geometry.global_batch)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.peak_lr)
        self.schedule = build_schedule(cfg.schedule, self.peak_lr, self.data.steps_per_epoch)
        self.amp_dtype = amp_dtype(cfg, dist.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.mix_rng = np.random.default_rng(cfg.train.seed * 1_000 + dist.rank)
        self.progress = Progress()
        self.bad_steps = BadStepGuard(cfg.train.max_bad_steps, dist.device)
        self.ckpts = CheckpointManager(
            self.run_dir / "checkpoints", cfg.checkpoint.keep_last, cfg.checkpoint.milestones
        )

    def load(self, ckpt: TrainingCheckpoint, path: Path) -> None:
        check_resume_model(ckpt.model, ckpt.config, self.model, path)
        self.model.load_state_dict(ckpt.model)
        if self.ema is not None and ckpt.ema is not None:
            self.ema.load_state_dict(ckpt.ema)
        self.optimizer.load_state_dict(ckpt.optimizer)
        if self.scaler is not None and ckpt.scaler:
            self.scaler.load_state_dict(ckpt.scaler)
        self.progress = ckpt.progress
        if ckpt.world_size == self.dist.world_size and len(ckpt.rng) > self.dist.rank:
            restore_rng(ckpt.rng[self.dist.rank])
            self.mix_rng.bit_generator.state = ckpt.rng[self.dist.rank]["mixtoken"]
        else:
            warnings.warn(
                f"{path} was written by {ckpt.world_size} process(es), this run has {self.dist.world_size}: the data "
                "order continues from the same sample (no repeats or skips), random states are re-seeded.",
                stacklevel=2,
            )
            seed_everything(self.cfg.train.seed + self.dist.rank + 7919 * self.progress.step)
            if self.progress.epoch_consumed % self.geometry.global_batch:
                self.progress.epoch_consumed -= self.progress.epoch_consumed % self.geometry.global_batch
        restore_loader(self.data.train_loader, ckpt, self.dist, self.progress)  # this rank's place in the epoch
        if self.main:
            print(  # epochs count from 1: "epoch 1 complete" means the first epoch is done
                f"volo train: resumed from {path} at step {self.progress.step}, epoch {self.progress.epoch} complete, "
                f"continuing in epoch {self.progress.epoch + 1}"
            )

    def wrap(self) -> None:
        self.ctx = wrap_for_steps(
            self.cfg, self.model, self.optimizer, self.dist, self.mix_rng, self.amp_dtype, self.scaler
        )

    # -- the run --------------------------------------------------------------------------------------------
    def run(self, resume: str | None, allow_config_change: bool = False) -> RunResult:
        warn_cpu_amp(self.cfg, self.dist.device)  # before config.yaml is written: it records what runs
        found = resolve_resume(resume, self.run_dir / "checkpoints")
        self.setup(resuming=found is not None)
        if found is not None:
            path, saved = found
            self.load(saved, path)  # another model: refused here, naming what the checkpoint holds
            check_resume_config(saved.config, saved.world_size, self.cfg, self.dist, path, allow_config_change)
        self.wrap()
        self.vote = StopVote(self.stop, self.dist.distributed, self.dist.backend)
        if self.main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            (self.run_dir / "metrics").mkdir(parents=True, exist_ok=True)
            # rows of steps after the checkpoint (a crash, or a fall back past a damaged one) are redone: drop them
            drop_rows_after(self.run_dir / "metrics", self.progress.step, self.progress.epoch)
            remove_orphan_temps(self.run_dir / "weights")
        barrier()
        self.loggers = RunLoggers(self.run_dir, self.cfg, self.main)  # TensorBoard / W&B when asked for
        steps_log = MetricsLog(self.run_dir / "metrics", "steps", self.main, sink=self.loggers.log)
        geo, bar = self.geometry, self.main and self.cfg.train.progress
        self.step_log = StepLogger(
            steps_log, self.progress, geo.global_batch, self.schedule.total_steps, bar, lines=self.main and not bar
        )
        self.epoch_log = MetricsLog(self.run_dir / "metrics", "epochs", self.main, sink=self.loggers.log)
        if self.main:
            tl = self.cfg.token_labels
            labels = f"token labels from {tl.label_root}" if tl.label_root else "plain labels (no token labels)"
            print(
                f"volo train: {self.cfg.model.name} @{self.cfg.model.img_size}, {len(self.data.classes)} classes, "
                f"{labels}, global batch {self.geometry.global_batch} ({self.dist.world_size} x "
                f"{self.cfg.train.batch_size} x {self.cfg.train.accumulation}), peak lr {self.peak_lr:.3g}, "
                f"{self.schedule.total_steps} steps, device {self.dist.device}, run folder {self.run_dir}"
            )
            warn_plain_production(self.cfg)
        interrupted = self.loop()
        return self.finish(interrupted)

    def loop(self) -> bool:
        cfg, prog, loader = self.cfg, self.progress, self.data.train_loader
        max_steps = min(cfg.train.max_steps or math.inf, self.schedule.total_steps)
        last_epoch = total_epochs(cfg.schedule)
        acc, gb = cfg.train.accumulation, self.geometry.global_batch
        dev = self.dist.device
        self.last_eval: EvalResult | None = None
        while prog.epoch < last_epoch and prog.step < max_steps:
            loader.set_epoch(prog.epoch)  # keeps a restored position inside this epoch
            # on the device: pytorch copies one batch ahead, dali / nvjpeg decode there; a batch that never comes
            # (a FIFO in the data, a hung mount) -> VoloError after VOLO_LOAD_TIMEOUT_S
            batches = timed(loader, "training")
            bar = self.step_log.bar(self.data.steps_per_epoch)
            sums = torch.zeros(4, device=dev)  # loss, cls, tokens, skipped since the last log
            # this epoch's loss sum (this rank; a resume starts from the checkpoint's mean over ranks) and steps
            self.epoch_loss = torch.full((), prog.epoch_loss_sum, device=dev)
            self.epoch_steps = prog.epoch_steps
            since, t0, micro, stopped = 0, time.perf_counter(), [], False
            lr, stats = self.schedule(prog.step), None
            for batch in batches:
                micro.append(batch)
                if len(micro) < acc:
                    continue
                lr = self.schedule(prog.step)
                set_lr(self.optimizer, lr)
                stats = train_step(self.ctx, micro)
                self.bad_steps.update(stats.skipped)
                micro = []
                if self.ema is not None:
                    self.ema.update(self.model)
                prog.step += 1
                prog.epoch_consumed += gb
                prog.images_seen += gb
                sums += stats.parts
                self.epoch_loss += stats.parts[0]
                self.epoch_steps += 1
                since += 1
                if bar is not None:
                    bar.update(1)
                if prog.step % cfg.train.log_every == 0 or prog.step >= max_steps:
                    t0 = self.step_log.write(sums, since, stats.grad_norm, lr, t0, bar)
                    sums.zero_()
                    since = 0
                    if self.bad_steps.tripped():
                        raise self.bad_steps.error(prog.step, self.save(epoch_end=False))
                self.stop.step = prog.step
                stopped = self.vote.poll()  # every step: all ranks stop at the same boundary, within one step
                if prog.step >= max_steps or stopped:
                    break
                every = cfg.checkpoint.every_steps
                if every and prog.step % every == 0 and prog.epoch_consumed < self.data.epoch_length:
                    self.save(epoch_end=False)
            if bar is not None:
                bar.close()
            if since and stats is not None:
                self.step_log.write(sums, since, stats.grad_norm, lr, t0, None)
            epoch_done = prog.epoch_consumed + gb > self.data.epoch_length
            if epoch_done:
                for _ in batches:  # a stop on the epoch's last step: let the loader close its epoch (DALI reset)
                    pass
            if epoch_done:
                last = prog.epoch + 1 >= last_epoch or prog.step >= max_steps
                self.end_epoch(lr, last)
            else:
                self.save(epoch_end=False)
            if stopped:  # interrupted unless that was the last step anyway
                return prog.step < max_steps and prog.epoch < last_epoch
        return False

    # -- epoch end: eval, log, checkpoint -------------------------------------------------------------------
    def end_epoch(self, lr: float, last: bool) -> None:
        prog = self.progress
        prog.epoch += 1
        prog.epoch_consumed = 0
        loss_sum = all_reduce_mean(self.epoch_loss.reshape(1)).item()  # every rank ran the same steps
        row = {"epoch": prog.epoch, "step": prog.step, "lr": lr, "train_loss": loss_sum / max(self.epoch_steps, 1)}
        prog.epoch_loss_sum, prog.epoch_steps = 0.0, 0
        is_best = False
        if self.data.eval_loader is not None and (prog.epoch % self.cfg.checkpoint.eval_every == 0 or last):
            share_rank0_buffers(self.model)  # evaluate the weights rank 0 exports, BatchNorm statistics included
            if self.ema is not None:
                share_rank0_buffers(self.ema.module)
            res = evaluate(self.model, timed(self.data.eval_loader, "evaluation"), self.dist.device, self.amp_dtype)
            self.last_eval = res
            row.update(top1=res.top1, top5=res.top5, val_loss=res.loss)
            if self.ema is not None:
                ema_loader = timed(self.data.eval_loader, "evaluation")
                ema_res = evaluate(self.ema.module, ema_loader, self.dist.device, self.amp_dtype)
                row.update(ema_top1=ema_res.top1, ema_top5=ema_res.top5)
            if res.top1 > prog.best_top1:
                prog.best_top1, prog.best_epoch, is_best = res.top1, prog.epoch, True
                self.export("best", self.model, {"epoch": prog.epoch, "top1": res.top1, "top5": res.top5})
        row["skipped_steps"] = prog.skipped_steps
        self.epoch_log.write(row)
        if self.main:
            print(
                f"volo train: epoch {prog.epoch} step {prog.step} train_loss {row['train_loss']:.4f}"
                + (f" top1 {row['top1']:.2f} top5 {row['top5']:.2f}" if "top1" in row else "")
            )
        self.save(epoch_end=True, is_best=is_best)

    def save(self, epoch_end: bool, is_best: bool = False) -> Path | None:
        """Gather every rank's RNG state; rank 0 writes the checkpoint (a failed write: VoloError on every rank).

        Weights holding a NaN or an infinity are never written: every rank raises the same VoloError instead.
        """
        self.refuse_nonfinite()
        prog = self.progress
        if not epoch_end:  # the epoch's running loss, so that its train_loss survives a resume
            prog.epoch_loss_sum = all_reduce_mean(self.epoch_loss.detach().reshape(1).clone()).item()
            prog.epoch_steps = self.epoch_steps
        rng = capture_rng()
        rng["mixtoken"] = self.mix_rng.bit_generator.state
        mine = {"rng": rng, "loader": pack_loader_state(self.data.train_loader.state_dict())}  # DALI: a bytes blob
        gathered = [mine]
        if self.dist.distributed:
            gathered = [None] * self.dist.world_size
            tdist.all_gather_object(gathered, mine)
        states = [g["rng"] for g in gathered]
        ckpt = None
        if self.main:
            ckpt = TrainingCheckpoint(
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                progress=self.progress,
                config=self.cfg.to_dict(),
                world_size=self.dist.world_size,
                ema=self.ema.state_dict() if self.ema is not None else None,
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                rng=states,
                sampler=self._position_state(),
                loader=[g["loader"] for g in gathered],
            )
        return save_checkpoint_together(self.ckpts, ckpt, epoch_end=epoch_end, is_best=is_best)

    def refuse_nonfinite(self) -> None:
        bad = nonfinite(self.model.state_dict())
        if self.ema is not None:
            bad += [f"ema.{k}" for k in nonfinite(self.ema.state_dict())]
        if bad:
            newest = next((p for p in self.ckpts.candidates() if self.ckpts.is_good(p)), None)
            kept = f"the newest checkpoint {newest} holds finite weights" if newest else "no checkpoint was written"
            raise VoloError(
                f"The weights became non-finite by step {self.progress.step} ({len(bad)} tensors hold NaN or inf, "
                f"e.g. {bad[0]}); nothing was written and {kept}. Lower optim.lr_base or schedule.warmup_lr, set "
                "train.clip_grad, then resume with --resume auto (or --resume a checkpoint)."
            )

    def _position_state(self) -> dict:
        """Where the epoch stands, from `Progress`, over all ranks (each rank's own loader position: `loader`)."""
        return {"epoch": self.progress.epoch, "consumed": self.progress.epoch_consumed, "backend": self.data.backend}

    def export(self, name: str, module: torch.nn.Module, extra: dict) -> Path:
        """Rank 0 writes weights/<name>.safetensors atomically; a failed write is the same VoloError on every rank."""
        meta = {"classes": self.data.classes, "recipe": self.cfg.recipe, "step": self.progress.step, **extra}
        target = self.run_dir / "weights" / f"{name}.safetensors"
        save = save_timm_weights if isinstance(module, TimmTeacherNet) else save_weights
        write = (lambda: save(module, target, extra=meta)) if self.main else None
        return write_together(write, target, target if target.is_file() else None) or target

    # -- the end --------------------------------------------------------------------------------------------
    def finish(self, interrupted: bool) -> RunResult:
        prog = self.progress
        final = None if interrupted else self.run_dir / "weights" / "final.safetensors"
        ema_path = None
        if not interrupted:  # "final" only for a run that finished; never non-finite weights
            self.refuse_nonfinite()
            final = self.export("final", self.model, {"epoch": prog.epoch})
            if self.ema is not None:
                ema_path = self.export("final_ema", self.ema.module, {"epoch": prog.epoch})
        metrics = run_metrics(prog, self.last_eval, self.run_dir, self.main)
        self.loggers.close()
        plots = []
        if self.main and not interrupted:
            from volo.training.plots import plot_run

            plots = plot_run(self.run_dir)
        best = self.run_dir / "weights" / "best.safetensors"
        result = RunResult(self.run_dir, final, best if best.is_file() else None, ema_path, metrics, plots, interrupted)
        if self.main:
            result.write()
        barrier()
        return result
