"""The `volo` command: one sub-command per file in this folder.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets `func`
(a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from volo.errors import VoloError

# Sub-command modules, in the order `volo --help` lists them.
COMMANDS = ["demo", "train", "eval", "predict", "label", "bench", "slurm", "bind", "plan"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volo", description="Train and run VOLO vision transformers with token labeling."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"volo.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"volo.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (VoloError, FileNotFoundError) as err:
        print(f"volo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
