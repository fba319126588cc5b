"""`volo eval CHECKPOINT --data DIR`: top-1/top-5 with the model's crop_pct and interpolation (torchrun-aware)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate VOLO weights on an ImageFolder (top-1/top-5)")
    p.add_argument("checkpoint", help="our .safetensors export or .pt checkpoint, or a released .pth/.pth.tar")
    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder (or a folder holding val/)")
    p.add_argument("--batch-size", type=int, default=64, help="images per process per step")
    p.add_argument("--workers", type=int, default=4, help="data-loading workers per process")
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
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from volo.distributed.process_group import init_distributed, teardown
    from volo.training.inference import evaluate_checkpoint

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
        )
    finally:
        teardown()
    if dist.is_main:
        if args.json:
            print(json.dumps(res.to_dict()))
        else:
            print(
                f"{args.checkpoint}: top-1 {res.top1:.2f}%  top-5 {res.top5:.2f}%  loss {res.loss:.4f}  "
                f"({res.images} images)"
            )
    return 0
