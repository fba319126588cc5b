"""`volo predict CHECKPOINT IMAGE|DIR|GLOB...`: the top-k classes of each image, with names."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from volo.errors import VoloError

DESCRIPTION = """Print the top-k classes (names and probabilities) of each image. Images may be files, folders
(searched recursively for .jpg/.jpeg/.png/... files) or quoted globs ('photos/**/*.jpg'). The model's own eval
settings (pretrained_cfg: resolution, crop_pct, interpolation, mean/std) are used; class names come from the
.json beside our weights, ImageNet's for 1000-class weights, else the class index."""


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="top-k classes of images, folders or globs", description=DESCRIPTION)
    p.add_argument("checkpoint", help="our .safetensors export or .pt checkpoint, or a released .pth/.pth.tar")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or globs")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.set_defaults(func=run)


def expand_images(specs: list[str]) -> list[Path]:
    """Files as given; folders searched recursively for image files; glob patterns expanded (`**` recursive).
    A spec that names nothing is a one-line error."""
    from volo.data.dataset import is_image_file

    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise VoloError(f"Folder {path} holds no image files (.jpg, .jpeg, .png, ...); pass images or globs.")
            out += found
        elif path.is_file():
            out.append(path)
        elif any(c in spec for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not found:
                raise VoloError(f"The pattern {spec!r} matches no files; check the path (quote it for '**').")
            out += found
        else:
            raise VoloError(f"Image {path} does not exist; pass image files, folders or glob patterns.")
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from volo.training.inference import predict_images

    if args.topk < 1:
        raise VoloError(f"--topk {args.topk} must be at least 1.")
    images = expand_images(args.images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for pred in predict_images(args.checkpoint, images, device, args.topk):
        print(pred.image)
        for rank, (idx, name, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {name:<40s} {100 * prob:6.2f}%  (class {idx})")
    return 0
