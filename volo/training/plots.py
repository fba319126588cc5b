"""PNG plots of a run at its end: training loss and learning rate per step, accuracy per epoch."""

from __future__ import annotations

from pathlib import Path

from volo.training.metrics import read_jsonl


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write `plots/loss.png`, `plots/lr.png` and `plots/accuracy.png` from the run's metrics; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps = [r for r in read_jsonl(run_dir / "metrics" / "steps.jsonl") if isinstance(r.get("loss"), (int, float))]
    epochs = read_jsonl(run_dir / "metrics" / "epochs.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if steps:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss")
        if epochs and "train_loss" in epochs[0]:
            ax.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", label="epoch mean")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.set_title(f"{run_dir.name}: training loss")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "loss.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in steps], [r["lr"] for r in steps])
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("learning rate")
        ax.set_title(f"{run_dir.name}: learning rate")
        ax.grid(alpha=0.3)
        save(fig, "lr.png")

    evals = [r for r in epochs if "top1" in r]
    if evals:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["epoch"] for r in evals], [r["top1"] for r in evals], "o-", label="top-1")
        ax.plot([r["epoch"] for r in evals], [r["top5"] for r in evals], "s--", label="top-5")
        if any("ema_top1" in r for r in evals):
            ax.plot([r["epoch"] for r in evals], [r.get("ema_top1") for r in evals], "^:", label="EMA top-1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{run_dir.name}: validation accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "accuracy.png")
    return written
