"""`volo train RECIPE [--set section.key=value ...] [--resume auto|PATH] [--overwrite] [--data DIR] [--out DIR]`.

Launch under torchrun for several processes: `torchrun --nproc-per-node 8 -m volo.cli.main train d1_224 ...`.
Exit codes (one per outcome, see volo/training/signals.py): 0 finished, 3 stopped by a signal after a checkpoint
(0 under torchrun), 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from volo.cli.paths import require_output_dir
from volo.errors import VoloError
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start the run folder again from scratch: deletes its checkpoints, metrics and weights (without "
        "--resume, an existing run folder is refused)",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even though the config differs from the checkpoint's (a warning instead of an error)",
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
    out = require_output_dir(cfg.checkpoint.output_dir, "--out (checkpoint.output_dir)")
    require_output_dir(out / (cfg.checkpoint.run_name or cfg.recipe), "--name (checkpoint.run_name): the run folder")
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from volo.distributed.process_group import is_main_process, teardown
    from volo.training.signals import EXIT_DONE, EXIT_FAILED, stopped_exit_code
    from volo.training.trainer import train

    finished = False
    try:
        try:
            result = train(
                cfg, resume=args.resume, overwrite=args.overwrite, allow_config_change=args.allow_config_change
            )
        except VoloError as err:  # the run started and failed (a dead peer, a failed save, NaN steps): exit 1
            print(f"volo train: error: {err}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        if is_main_process():  # one result, printed before the last barrier (no rank can be killed mid-print)
            print(json.dumps(result.metrics, indent=2), flush=True)
            if result.interrupted:
                print(
                    f"volo train: stopped by a signal after saving a checkpoint in {result.run_dir}/checkpoints; "
                    f"relaunch with --resume auto to continue (exit {stopped_exit_code()})",
                    flush=True,
                )
            else:
                print(f"volo train: run folder {result.run_dir}; weights {result.final_weights}", flush=True)
        finished = True
    finally:
        # after an error the other ranks may be inside a collective: leave without the barrier, so this rank's
        # error is printed and it exits now (the others then fail their collective and name this rank)
        teardown(wait=finished)
    return stopped_exit_code() if result.interrupted else EXIT_DONE
