"""`volo bench`: ours vs timm's VOLO, training and eval speed and memory, in one process.

With no arguments it is the quick check: volo_tiny on CPU (well under a minute on 2 cores), or the full D1..D5
plan on a GPU. The measuring code is `benchmarks/bench_model.py` in the source tree (`--outlook` runs
`benchmarks/bench_outlook.py` instead); `volo bench` writes the table to `--out`, by default
`./volo_bench_model.md` (`./volo_bench_outlook.md`) in the current directory, never into `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from volo.errors import VoloError

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
DEFAULT_OUT = "volo_bench_{kind}.md"
"""`volo bench` writes its report (and a .json beside it) in the current directory unless --out says where."""


def load_script(name: str) -> ModuleType:
    """Import `benchmarks/<name>.py` of the source checkout (the benchmarks are not part of the wheel)."""
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        raise VoloError(
            f"volo bench needs {path} from the source checkout; install volo with `pip install -e .` from the "
            "repository to use it."
        )
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark ours vs timm (train/eval speed, memory, MFU)",
        description=__doc__.split("\n")[0],
    )
    try:
        load_script("bench_model").add_arguments(parser)
    except VoloError as err:  # an installed wheel without the source tree: say so when `volo bench` is run
        message = str(err)

        def unavailable(_args: argparse.Namespace) -> int:
            raise VoloError(message)

        parser.set_defaults(func=unavailable)
        return
    parser.add_argument(
        "--outlook", action="store_true", help="benchmark outlook attention alone (benchmarks/bench_outlook.py)"
    )
    # the scripts default to benchmarks/results/ (the committed reports); volo bench writes where it is run
    out_help = f"report file (default: ./{DEFAULT_OUT.format(kind='model')}, --outlook: ./"
    for action in parser._actions:
        if action.dest == "out":
            action.help = out_help + DEFAULT_OUT.format(kind="outlook") + ")"
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is None:  # never into the install tree's benchmarks/results/, where the committed reports live
        args.out = Path.cwd() / DEFAULT_OUT.format(kind="outlook" if args.outlook else "model")
    if args.outlook:
        argv = ["--device", args.device] if args.device else []
        argv += ["--models", *args.models] if args.models else []
        argv += ["--batch", str(args.batch)] if args.batch else []
        argv += ["--steps", str(args.steps)] if args.steps else []
        argv += ["--out", str(args.out)] if args.out else []
        load_script("bench_outlook").main(argv)
        return 0
    bench = load_script("bench_model")
    bench.run(bench.config_from_args(args, quick=not args.models))
    return 0
