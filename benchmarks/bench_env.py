"""Where a benchmark ran and how its steps are timed, shared by every script in benchmarks/.

`describe_environment` (device, driver, versions, commit, date, a short card slug for file names) heads every
report `write_report` writes; `StepClock` times steps with CUDA events on a GPU, wall and process CPU time on CPU;
`matmul_peak_flops` is the MFU denominator, measured as `../shared/bench/timm_baseline.py` measures it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2-224" / "train"
"""Real photographs beside the project (research licence: read in place, never copied); optional."""


@dataclass
class Environment:
    """Where a benchmark ran; printed at the top of every report."""

    device: str
    driver: str
    versions: str
    commit: str
    date: str
    slug: str
    """Short device name for the report file: `cpu`, `h100`, `h200`..."""


def describe_environment(device: torch.device) -> Environment:
    import timm

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    versions = f"torch {torch.__version__}, triton {triton_version}, timm {timm.__version__}"
    versions += f", python {platform.python_version()}"
    repo = Path(__file__).resolve().parents[1]
    commit = _command(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    if _command(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"]):
        commit += " (+ uncommitted changes)"
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        driver = _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines()[:1]
        driver_text = f"driver {driver[0] if driver else 'unknown'}, CUDA {torch.version.cuda}"
        slug = next((t.lower() for t in name.replace("-", " ").split() if t[:1] in "HABL" and t[1:2].isdigit()), "gpu")
        return Environment(name, driver_text, versions, commit, date, slug)
    cpu = _cpu_name()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    described = f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} threads, load average {load}"
    return Environment(described, "n/a (CPU)", versions, commit, date, "cpu")


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _command(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Measured dense matmul FLOP/s (the MFU denominator), as shared/bench/timm_baseline.py measures it."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def write_report(path: Path, title: str, env: Environment, settings: str, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# {title}\n\n- device: {env.device}\n- driver: {env.driver}\n- versions: {env.versions}\n"
        f"- commit: {env.commit}\n- date: {env.date}\n- settings: {settings}\n\n{table}\n"
    )


class StepClock:
    """Durations of code regions without host synchronisation (CUDA events), or on CPU both wall-clock and the
    process's CPU time (which a machine shared with other jobs disturbs much less when torch runs one thread)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return (time.perf_counter(), time.process_time())

    @staticmethod
    def seconds(start, end) -> float:
        """Wall-clock seconds (GPU time between events on CUDA)."""
        if isinstance(start, tuple):
            return end[0] - start[0]
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    @staticmethod
    def cpu_seconds(start, end) -> float | None:
        """Process CPU seconds (all threads) on CPU; None on CUDA."""
        return end[1] - start[1] if isinstance(start, tuple) else None
