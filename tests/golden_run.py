"""The golden-loss run: a fixed-seed tiny training run whose first steps' losses are kept in
tests/assets/golden_losses.json and compared by tests/test_golden_losses.py (torchtitan's loss-curve check).

    python tests/golden_run.py OUT.json     # run it, write what it logged to OUT.json (the test does this)
    python tests/golden_run.py --update     # regenerate tests/assets/golden_losses.json after an INTENDED change

Always on CPU with one thread (OMP_NUM_THREADS=1 is set before torch loads), so the numbers do not depend on the
machine's core count. volo_tiny at 64 px (4x4 token grid: MixToken boxes are real), 4 generated classes, batch 4,
2 epochs of 3 steps (1 warmup epoch, then cosine), gradient clipping that bites, EMA on, deterministic algorithms.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

ASSET = Path(__file__).resolve().parent / "assets" / "golden_losses.json"
OVERRIDES = [
    "model.num_classes=4",
    "model.img_size=64",
    "token_labels.size=null",
    "train.batch_size=4",
    "optim.lr_base=1.0",
    "schedule.epochs=2",
    "schedule.warmup_epochs=1",
    "train.clip_grad=0.5",
    "train.ema=true",
    "train.ema_decay=0.9",
    "train.deterministic=true",
    "train.log_every=1",
    "train.progress=false",
]
FIELDS = ("loss", "cls_loss", "token_loss", "grad_norm", "lr")


def golden_run(work: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from volo.data.synthetic import make_synthetic_dataset
    from volo.training.config import load_config
    from volo.training.trainer import train

    make_synthetic_dataset(work / "data" / "train", classes=4, per_class=3, size=72, seed=0)
    make_synthetic_dataset(work / "data" / "val", classes=4, per_class=1, size=72, seed=1)
    cfg = load_config(
        "debug",
        [*OVERRIDES, f"data.path={work / 'data'}", f"checkpoint.output_dir={work / 'runs'}", "checkpoint.run_name=g"],
    )
    result = train(cfg)
    rows = [json.loads(r) for r in (result.run_dir / "metrics" / "steps.jsonl").read_text().splitlines()]
    out = {f: [r[f] for r in rows] for f in FIELDS}
    out["step"] = [r["step"] for r in rows]
    out["top1"] = result.metrics["top1"]
    return out


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        got = golden_run(Path(tmp))
    if argv == ["--update"]:
        import torch

        got["_regenerate"] = "python tests/golden_run.py --update  (only after a change meant to alter the numbers)"
        got["_written_with"] = f"torch {torch.__version__}, 1 CPU thread"
        ASSET.parent.mkdir(parents=True, exist_ok=True)
        ASSET.write_text(json.dumps(got, indent=1) + "\n")
        print(f"wrote {ASSET}")
    elif len(argv) == 1:
        Path(argv[0]).write_text(json.dumps(got))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
