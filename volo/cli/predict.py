"""`volo predict CHECKPOINT IMAGE...`: the top-5 classes of each image, with names."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-5 classes of images")
    p.add_argument("checkpoint", help="our .safetensors export or .pt checkpoint, or a released .pth/.pth.tar")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from volo.training.inference import predict_images

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for pred in predict_images(args.checkpoint, args.images, device, args.topk):
        print(pred.image)
        for rank, (idx, name, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {name:<40s} {100 * prob:6.2f}%  (class {idx})")
    return 0
