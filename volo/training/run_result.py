"""What a run hands back and leaves in `<run folder>/result.json`: `RunResult`, with the final evaluation and the
run's totals (steps, epochs, skipped steps, last logged loss and speed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from volo.training.checkpoint import Progress
from volo.training.evaluate import EvalResult
from volo.training.metrics import read_jsonl


@dataclass
class RunResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    final_weights: Path | None
    """weights/final.safetensors; None when a stop signal interrupted the run (only a finished run writes it)."""
    best_weights: Path | None
    ema_weights: Path | None
    metrics: dict
    """Final eval (top1, top5, val_loss, images) plus steps, epochs, skipped_steps, train_loss, images_per_s."""
    plots: list[Path] = field(default_factory=list)
    interrupted: bool = False
    """True when a stop signal ended the run early (a checkpoint was written; resume with --resume auto)."""

    def write(self) -> Path:
        """result.json in the run folder (paths as strings)."""
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        summary["plots"] = [str(p) for p in self.plots]
        path = self.run_dir / "result.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return path


def run_metrics(prog: Progress, last_eval: EvalResult | None, run_dir: Path, main: bool) -> dict:
    """`RunResult.metrics`: the totals of `prog`, the last evaluation, and (rank 0) the last step row's loss and
    images/s from metrics/steps.jsonl."""
    metrics: dict = {"steps": prog.step, "epochs": prog.epoch, "skipped_steps": prog.skipped_steps}
    if last_eval is not None:
        metrics.update(
            top1=last_eval.top1,
            top5=last_eval.top5,
            val_loss=last_eval.loss,
            val_images=last_eval.images,
            best_top1=prog.best_top1,
            best_epoch=prog.best_epoch,
        )
    steps = read_jsonl(run_dir / "metrics" / "steps.jsonl") if main else []
    if steps:
        metrics.update(train_loss=steps[-1]["loss"], images_per_s=steps[-1]["images_per_s"])
    return metrics
