"""PNG plots: a run's training and validation loss, learning rate and accuracy per epoch (at its end); the
confusion matrix of `volo eval --out`."""

from __future__ import annotations

from pathlib import Path

from volo.training.metrics import read_jsonl


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write `plots/loss.png` (training loss per step and epoch, validation loss per evaluated epoch),
    `plots/lr.png` and `plots/accuracy.png` (whole epochs) from the run's metrics; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss", alpha=0.6)
        if epochs and "train_loss" in epochs[0]:
            ax.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], "o-", label="train (epoch mean)")
        val = [r for r in epochs if isinstance(r.get("val_loss"), (int, float))]
        if val:
            ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "s-", label="validation loss")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.set_title(f"{run_dir.name}: training and validation loss")
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{run_dir.name}: validation accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "accuracy.png")
    return written


def plot_confusion(confusion, class_names: list[str], path: str | Path, title: str = "") -> Path:
    """A PNG of a (K, K) [true, predicted] count matrix, rows normalised to fractions, over the classes that have
    images (so a 10-class folder evaluated by a 1000-class model gives a 10-row plot plus the columns predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    rows = np.flatnonzero(counts.sum(axis=1))
    cols = np.union1d(rows, np.flatnonzero(counts[rows].sum(axis=0)))
    sub = counts[np.ix_(rows, cols)]
    frac = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.35 * max(len(rows), len(cols)), 40)
    fig, ax = plt.subplots(figsize=(side, side * max(len(rows), 1) / max(len(cols), 1) + 1))
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if max(len(rows), len(cols)) <= 40:
        ax.set_xticks(range(len(cols)), [class_names[c] for c in cols], rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), [class_names[r] for r in rows], fontsize=7)
    if max(len(rows), len(cols)) <= 15:
        for i in range(len(rows)):
            for j in range(len(cols)):
                if sub[i, j]:
                    colour = "white" if frac[i, j] > 0.5 else "black"
                    ax.text(j, i, str(sub[i, j]), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
