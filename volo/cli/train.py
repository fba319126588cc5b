"""`volo train RECIPE [--set section.key=value ...] [--resume auto|PATH] [--data DIR] [--out DIR]`.

Launch under torchrun for several processes: `torchrun --nproc-per-node 8 -m volo.cli.main train d1_224 ...`.
"""

from __future__ import annotations

import argparse
import json

from volo.training.config import list_recipes, load_config


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a VOLO model from a recipe",
        description=f"Train from a recipe name ({', '.join(list_recipes())}) or a YAML path.",
    )
    p.add_argument("recipe", help="recipe name or path to a complete YAML recipe")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set optim.lr_base=1e-3",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="'auto': continue from the newest valid checkpoint of the run folder; or a checkpoint path",
    )
    p.add_argument("--data", default=None, metavar="DIR", help="ImageFolder root with train/ and val/ (data.path)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for run folders (checkpoint.output_dir)")
    p.add_argument("--name", default=None, help="run folder name (checkpoint.run_name; default: the recipe name)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.out:
        overrides.append(f"checkpoint.output_dir={args.out}")
    if args.name:
        overrides.append(f"checkpoint.run_name={args.name}")
    cfg = load_config(args.recipe, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from volo.distributed.process_group import teardown
    from volo.training.trainer import train

    try:
        result = train(cfg, resume=args.resume)
    finally:
        teardown()
    if result.run_dir and (result.run_dir / "result.json").is_file():
        print(json.dumps(result.metrics, indent=2))
        print(f"volo train: run folder {result.run_dir}; weights {result.final_weights}")
    if result.interrupted:  # a stop signal: the checkpoint is written; exit 0 so the batch script requeues
        print("volo train: stopped by a signal after saving a checkpoint; relaunch with --resume auto to continue")
    return 0
