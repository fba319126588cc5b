"""PNG plot of a scaling plan: throughput against ideal, and time-to-train, per node count."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from volo.distributed.planner import ScalePrediction


def plot_plan(predictions: Sequence[ScalePrediction], single_gpu_images_s: float, title: str, path: Path) -> Path:
    """Write a two-panel PNG (images/s with the ideal line and efficiency labels; hours to train) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [p.nodes for p in predictions]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(nodes, [p.gpus * single_gpu_images_s for p in predictions], "--", color="grey", label="ideal (linear)")
    left.plot(nodes, [p.images_s for p in predictions], "o-", label="predicted")
    for p in predictions:
        left.annotate(f"{p.efficiency:.0%}", (p.nodes, p.images_s), textcoords="offset points", xytext=(4, -12))
    left.set(xlabel="nodes", ylabel="training images/s", title="throughput (labels: efficiency vs 1 GPU)")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(nodes, [p.hours for p in predictions], "o-", color="tab:red")
    for p in predictions:
        right.annotate(f"{p.hours:.0f} h", (p.nodes, p.hours), textcoords="offset points", xytext=(4, 4))
    right.set(xlabel="nodes", ylabel="hours", title="time to train")
    right.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
