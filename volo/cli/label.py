"""`volo label`: run a teacher over an ImageFolder and write a token-label store (or verify one).

volo label --data DIR --teacher CKPT_OR_NAME --out STORE [--topk 5] [--batch-size 64] [--shard-size 2048]
torchrun --nproc-per-node 8 -m volo.cli.main label ...     # each rank writes its own shards
volo label --verify STORE                                  # shapes, dtypes and sha256 of every shard
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from volo.cli.paths import require_output_dir
from volo.errors import VoloError

DESCRIPTION = """Run a teacher over an ImageFolder training set (DATA/<class>/<image>: pass the train/ folder,
not the root holding train/ and val/) and write its top-k logits per location into a sharded token-label store
(resumable; under torchrun each rank writes its own shards). --verify STORE checks an existing store instead."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label", help="generate token labels with a teacher (or --verify a store)", description=DESCRIPTION
    )
    need = p.add_argument_group("required to generate labels (all three; not with --verify)")
    need.add_argument("--data", type=Path, help="ImageFolder training set: <data>/<class>/<image>")
    need.add_argument(
        "--teacher",
        help="a VOLO checkpoint file, a VOLO name (volo_d1; random init unless --teacher-checkpoint), "
        "or timm:<model> (e.g. timm:dm_nfnet_f6 with --teacher-checkpoint)",
    )
    need.add_argument("--out", type=Path, help="store directory to write (resumes if it exists)")
    p.add_argument("--teacher-checkpoint", type=Path, help="weights for a named teacher")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of a named teacher (default 1000)")
    p.add_argument("--input-size", type=int, help="teacher input size T (default: the teacher's own)")
    p.add_argument(
        "--class-map",
        choices=["imagenet"],
        help="imagenet: the teacher has ImageNet-1k's classes and the folders are wnids (an ImageNet subset such "
        "as Imagenette); keep only the folders' classes, stored with the dataset's class ids",
    )
    p.add_argument(
        "--topk", type=int, default=5, help="logits kept per location (default 5; at most the teacher's classes)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per teacher forward (default 64)")
    p.add_argument("--shard-size", type=int, default=2048, help="images per shard file (default 2048)")
    p.add_argument(
        "--workers", type=int, default=4, help="decoding workers per process (default 4, at most the usable CPUs)"
    )
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    p.add_argument("--wait-timeout", type=float, default=3600.0, help="seconds rank 0 waits for other ranks")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", type=Path, metavar="STORE", help="check an existing store instead of generating")
    p.set_defaults(func=run)


def check_training_folder(data: Path) -> None:
    """Refuse a dataset root (holding train/ and val/ of class folders) where its training split belongs."""
    if not data.is_dir():
        return  # the dataset scan reports it
    splits = [s for s in ("train", "val") if (data / s).is_dir() and any(p.is_dir() for p in (data / s).iterdir())]
    others = [p for p in data.iterdir() if p.is_dir() and p.name not in ("train", "val")]
    if splits and not others:
        raise VoloError(
            f"--data {data} holds the split folder(s) {', '.join(s + '/' for s in splits)}, which would be labelled "
            f"as classes; pass --data {data / splits[0]}."
        )


def run(args: argparse.Namespace) -> int:
    from volo.labeling.store import ShardedLabelStore

    if args.verify is not None:
        store = ShardedLabelStore(args.verify)
        problems = store.verify(checksums=True)
        for problem in problems:
            print(f"  {problem}")
        print(
            f"{args.verify}: {len(store)} images, {len(store.shards)} shards, "
            + ("OK" if not problems else f"{len(problems)} problem(s)")
        )
        return 0 if not problems else 1
    missing = [
        flag for flag, v in (("--data", args.data), ("--teacher", args.teacher), ("--out", args.out)) if v is None
    ]
    if missing:
        raise VoloError(f"volo label needs {', '.join(missing)} (or --verify STORE to check a store).")
    require_output_dir(args.out, "--out")
    import torch

    from volo.labeling.generate import GenerateConfig, env_rank, generate_labels, report_dict
    from volo.labeling.teacher import load_teacher

    rank, world = env_rank()
    device = args.device
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    check_training_folder(args.data)
    teacher = load_teacher(args.teacher, args.teacher_checkpoint, args.num_classes, args.input_size)
    class_map = None
    if args.class_map == "imagenet":
        from volo.data.dataset import scan_image_folder
        from volo.labeling.classmap import imagenet_class_map

        class_map = imagenet_class_map(scan_image_folder(args.data)[0])
    labelled = len(class_map) if class_map else teacher.num_classes
    if args.topk > labelled:
        what = f"{labelled} classes labelled" if class_map else f"teacher's {labelled} classes"
        print(f"volo label: --topk {args.topk} clamped to the {what}", flush=True)
        args.topk = labelled
    cfg = GenerateConfig(
        class_map=class_map,
        data=args.data,
        out=args.out,
        topk=args.topk,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        num_workers=args.workers,
        rank=rank,
        world_size=world,
        device=device,
        wait_timeout_s=args.wait_timeout,
        progress=not args.no_progress,
    )
    report = generate_labels(cfg, teacher)
    print(json.dumps(report_dict(report)))
    return 0
