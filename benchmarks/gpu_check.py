"""Everything the performance issues need from a GPU, in three device calls of under 10 minutes each.

Runs on a fresh GPU machine from the repository it sits in: `python3` (no `python` needed), torch + triton + timm +
pytest installed, volo NOT installed, no network. Every stage is a child process with this tree first on its
path, its own timeout (SIGINT, then SIGKILL 10 s later), and its own log; every report row is written the moment
it is measured, so a stage cut by its timeout keeps its finished rows. Each call ends (and, after each stage,
refreshes) ONE archive `$OUT/gpu_check_<call>.tar.gz` with the reports of benchmarks/results/, the logs and a
summary (card, driver, versions, commit, date, and each stage's outcome).

    python3 benchmarks/gpu_check.py 1     # GPU correctness tests: one kernel set per dtype, dispatch,
                                          # fullgraph, no host sync, CUDA graphs                  (<= 420 s)
    python3 benchmarks/gpu_check.py 2     # outlook op, then the eager model table, ours vs timm   (<= 450 s)
    python3 benchmarks/gpu_check.py 3     # compiled D1 real training step (+ compiled eval) vs timm, the D1
                                          # step and eval profiles, the targets table              (<= 490 s)

On a machine without CUDA every stage reports `skipped: no CUDA` and the archive is still written (the CPU test
suite runs it that way, tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

GPU_TESTS = [
    # one kernel set per dtype, on the odd shape (every parity class, border windows)
    *(f"tests/test_outlook_kernel.py::test_triton_parity_gpu[(2, 27, 29, 4, 32)-{d}]"
      for d in ("torch.float32", "torch.bfloat16", "torch.float16")),
    "tests/test_outlook_kernel.py::test_dispatch_picks_triton_on_cuda_and_model_matches_reference",
    "tests/test_outlook_kernel.py::test_compiled_training_forward_fullgraph_with_fused_kernel",
    "tests/test_gpu_training.py::test_train_step_never_synchronises_with_the_host",
    "tests/test_gpu_training.py::test_cuda_graph_mode_trains_like_eager",
]  # fmt: skip


@dataclass
class Stage:
    name: str
    budget_s: int
    argv: list[str]
    """Arguments after the interpreter; relative paths are from the repository root."""


def stages(call: int) -> list[Stage]:
    py = ["-u"]
    if call == 1:
        pytest = [*py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
        return [Stage("tests", 420, [*pytest, *GPU_TESTS])]
    if call == 2:
        return [
            Stage("outlook", 90, [*py, "benchmarks/bench_outlook.py"]),
            Stage("model", 360, [*py, "benchmarks/bench_model.py", "--ablate-outlook"]),
        ]
    if call == 3:
        compiled = ["--models", "volo_d1", "--compile", "--out", "benchmarks/results/model_gpu_compiled_d1.md"]
        return [
            Stage("compiled", 280, [*py, "benchmarks/bench_model.py", *compiled]),
            Stage("profile", 120, [*py, "benchmarks/profile_step.py", "--models", "volo_d1", "--amp", "bf16"]),
            Stage("profile_eval", 60, [*py, "benchmarks/profile_eval.py"]),
            Stage("targets", 30, [*py, "benchmarks/targets.py"]),
        ]
    raise SystemExit(f"gpu_check: call must be 1, 2 or 3, not {call}.")


def child_env() -> dict[str, str]:
    """This tree first on the path (volo and the benchmarks' shared modules), nothing installed needed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "benchmarks")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cuda_available() -> bool:
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    return subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=REPO).returncode == 0


def run_stage(stage: Stage, logs: Path, interpreter: str = sys.executable) -> dict:
    """Run one stage under its budget; its log is written as it runs. Returns its outcome for the summary."""
    log = logs / f"{stage.name}.log"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([interpreter, *stage.argv], cwd=REPO, env=child_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=stage.budget_s)
            outcome = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # the stage's reports already hold every finished row
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            outcome = f"timed out after {stage.budget_s} s (finished rows kept)"
    return {"stage": stage.name, "outcome": outcome, "seconds": round(time.monotonic() - start, 1)}


def environment() -> dict:
    code = (
        "import json, platform, torch, volo\n"
        "try:\n import triton; tv = triton.__version__\nexcept ImportError: tv = 'absent'\n"
        "import timm\n"
        "card = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'\n"
        "print(json.dumps({'card': card, 'torch': torch.__version__, 'cuda': torch.version.cuda, 'triton': tv,"
        " 'timm': timm.__version__, 'python': platform.python_version(), 'volo_from': volo.__file__}))"
    )
    info: dict = {}
    done = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=REPO, capture_output=True, text=True)
    info.update(json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-2000:]})
    for key, cmd in {
        "driver": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        "commit": ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
    }.items():
        try:
            info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            info[key] = "unknown"
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return info


def write_archive(archive: Path, logs: Path, summary: dict) -> None:
    """Summary + logs + every report under benchmarks/results, into one tar.gz (replaced atomically)."""
    (logs / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(logs, arcname=logs.name)
        for path in sorted(RESULTS.glob("*")):
            if path.is_file():
                tar.add(path, arcname=f"results/{path.name}")
    tmp.replace(archive)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("call", type=int, choices=[1, 2, 3], help="which device call (see the module doc)")
    parser.add_argument("--out", type=Path, help="archive folder (default: $OUT, else benchmarks/results)")
    args = parser.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = out / f"gpu_check_{args.call}_logs"
    logs.mkdir(exist_ok=True)
    archive = out / f"gpu_check_{args.call}.tar.gz"
    summary = {"call": args.call, "environment": environment(), "stages": []}
    print(json.dumps(summary["environment"]), flush=True)
    cuda = cuda_available()
    for stage in stages(args.call):
        if not cuda:
            result = {"stage": stage.name, "outcome": "skipped: no CUDA", "seconds": 0.0}
        else:
            print(f"== {stage.name} (budget {stage.budget_s} s)", flush=True)
            result = run_stage(stage, logs)
            tail = (logs / f"{stage.name}.log").read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), flush=True)
        summary["stages"].append(result)
        print(f"== {result['stage']}: {result['outcome']} ({result['seconds']} s)", flush=True)
        write_archive(archive, logs, summary)
    write_archive(archive, logs, summary)
    print(f"wrote {archive}")
    return archive


if __name__ == "__main__":
    main()
