"""The `volo` command: one sub-command per file in this folder.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets `func`
(a callable taking the parsed namespace and returning an exit code). Only the module of the command being run is
imported (`volo --help` and `volo --version` import none, and never torch), so start-up stays fast. Warnings print
as one line, `volo COMMAND: warning: ...`, as errors do.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from volo import __version__
from volo.errors import VoloError

COMMANDS: dict[str, str] = {
    "demo": "run the whole pipeline in miniature (teacher, labels, students, fine-tune) on generated or real data",
    "train": "train a VOLO model from a recipe (single process, torchrun or Slurm)",
    "eval": "evaluate VOLO weights on an ImageFolder: top-1/top-5, per-class accuracy, confusion matrix",
    "predict": "top-k classes of image files, folders (recursively) or globs",
    "label": "generate a token-label store with a teacher (or --verify one)",
    "bench": "benchmark ours vs timm's VOLO: train/eval speed, memory, MFU",
    "slurm": "write (and submit) a Slurm batch script for a multi-node run",
    "bind": "print or apply this machine's per-rank CPU/memory/HCA binding",
    "plan": "plan GPUs, nodes and time for a run (scaling model)",
}
"""Sub-commands in the order `volo --help` lists them, with their one-line help."""

EPILOG = "Run `volo COMMAND --help` for a command's flags. Python API: volo.create_model(...) (timm's conventions)."


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that sub-command's module is imported (the others are listed by name)."""
    parser = argparse.ArgumentParser(
        prog="volo", description="Train and run VOLO vision transformers with token labeling.", epilog=EPILOG
    )
    parser.add_argument("--version", action="version", version=f"volo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if command is not None and name != command:
            subparsers.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(f"volo.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"volo.cli.{name}":
                continue
            raise
        module.register(subparsers)
        sub = subparsers.choices[name]
        sub.description = sub.description or help_text[0].upper() + help_text[1:] + "."
    return parser


def _command_of(argv: list[str]) -> str:
    """The sub-command named on the command line ('' when none: `volo`, `volo --help`, `volo --version`)."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in COMMANDS else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    parser = build_parser(command or "")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    plain_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *_args, **_kw: f"volo {args.command}: warning: {message}\n"
    try:
        return int(args.func(args) or 0)
    except (VoloError, FileNotFoundError) as err:
        print(f"volo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = plain_format


if __name__ == "__main__":
    sys.exit(main())
