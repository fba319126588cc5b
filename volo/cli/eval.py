"""`volo eval CHECKPOINT --data DIR`: top-1/top-5 with the model's crop_pct and interpolation (torchrun-aware);
per-class accuracy and a confusion matrix with `--out DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Evaluate VOLO weights on an ImageFolder (DIR/<class>/<image>, or DIR/val/<class>/<image>).
Eval settings (resolution, crop_pct, interpolation, mean/std) are the model's pretrained_cfg; folder classes are
matched to the model's by name (ImageNet wnids for 1000-class weights), else by index with a warning. Prints
top-1/top-5, the loss and the worst classes; --out DIR also writes eval.json, per_class.csv and confusion.png.
Launch under torchrun to shard the images over processes."""


def register(subparsers) -> None:
    from volo.data.workers import usable_cpus

    p = subparsers.add_parser(
        "eval", help="evaluate VOLO weights on an ImageFolder (top-1/top-5, per class)", description=DESCRIPTION
    )
    p.add_argument("checkpoint", help="our .safetensors export or .pt checkpoint, or a released .pth/.pth.tar")
    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder (or a folder holding val/)")
    p.add_argument("--batch-size", type=int, default=64, help="images per process per step (default 64)")
    workers = min(4, usable_cpus())
    p.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"data-loading workers per process (default {workers}: 4, at most the CPUs this process may use)",
    )
    p.add_argument("--img-size", type=int, default=None, help="evaluate at this resolution (pos_embed resized)")
    p.add_argument("--crop-pct", type=float, default=None, help="override the model's centre-crop fraction")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only N images spread over the classes")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on a GPU for large sets)")
    p.add_argument(
        "--loader",
        choices=["pytorch", "dali"],
        default="pytorch",
        help="decode with PIL in DataLoader workers (pytorch) or with NVIDIA DALI, nvJPEG on the GPU (dali)",
    )
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write eval.json, per_class.csv and confusion.png here"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch logs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from volo.distributed.process_group import init_distributed, teardown
    from volo.errors import VoloError
    from volo.training.inference import evaluate_checkpoint

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise VoloError(f"--out {args.out} is a file; pass a folder for eval.json, per_class.csv and confusion.png.")
    dist = init_distributed()
    try:
        res = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            dist,
            args.batch_size,
            args.workers,
            args.img_size,
            args.crop_pct,
            args.max_images,
            args.compile,
            loader=args.loader,
            confusion=True,
            progress=not args.no_progress,
        )
    finally:
        teardown()
    if not dist.is_main:
        return 0
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(
            f"{args.checkpoint}: top-1 {res.top1:.2f}%  top-5 {res.top5:.2f}%  loss {res.loss:.4f}  "
            f"({res.images} images)"
        )
    report_per_class(res, args.out, quiet=args.json)
    return 0


def report_per_class(res, out: Path | None, quiet: bool = False) -> None:
    """Print the worst classes; with `out`, write eval.json, per_class.csv and confusion.png there."""
    import tempfile

    from volo.training.metrics import write_per_class

    names = res.class_names or [str(i) for i in range(res.confusion.shape[0])]
    folder = out if out is not None else Path(tempfile.mkdtemp(prefix="volo-eval-"))
    rows = write_per_class(folder / "per_class.csv", names, res.confusion)
    if not quiet and rows:
        worst = ", ".join(f"{r['class']} {r['top1']:.1f}%" for r in rows[:5])
        print(f"per-class top-1 (worst {min(5, len(rows))} of {len(rows)} classes): {worst}")
    if out is None:
        (folder / "per_class.csv").unlink()
        folder.rmdir()
        if not quiet:
            print("  (--out DIR writes per_class.csv, confusion.png and eval.json)")
        return
    from volo.training.plots import plot_confusion

    (out / "eval.json").write_text(json.dumps(res.to_dict(), indent=2) + "\n")
    png = plot_confusion(res.confusion, names, out / "confusion.png", f"top-1 {res.top1:.2f}% ({res.images} images)")
    if not quiet:
        print(f"wrote {out / 'per_class.csv'}, {png}, {out / 'eval.json'}")
