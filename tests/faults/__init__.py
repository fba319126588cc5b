"""Fault-injection helpers: tiny datasets and run configs, torchrun launches, process lookup, file damage.

Every launch is bounded by a timeout; every run is the debug recipe shrunk to volo_tiny at 32 px (a 2x2 token
grid), 4 classes x 8 images, so that a two-process torchrun job finishes in seconds on 2 CPU cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from volo.data.synthetic import make_synthetic_dataset

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]
RECORD_WORKER = Path(__file__).resolve().parent / "record_worker.py"

TINY = [
    "model.img_size=32",
    "token_labels.size=null",
    "model.num_classes=4",
    "schedule.epochs=2",
    "schedule.warmup_epochs=1",
    "train.log_every=1",
    "train.progress=false",
    "data.eval_batch_size=8",
]
"""`--set` overrides that shrink the debug recipe (add train.batch_size per launch)."""


def tiny_config(data: Path, out: Path, name: str, *extra: str):
    """The tiny run as an in-process config (batch 8, a checkpoint after every step, 10 kept), plus `extra`."""
    from volo.training.config import load_config

    base = [f"data.path={data}", f"checkpoint.output_dir={out}", f"checkpoint.run_name={name}", "train.batch_size=8"]
    return load_config("debug", [*TINY, *base, "checkpoint.every_steps=1", "checkpoint.keep_last=10", *extra])


def make_data(root: Path, per_class: int = 8, val_per_class: int = 1) -> Path:
    """`root/train` (4 x per_class JPEGs) and `root/val`; returns root."""
    make_synthetic_dataset(root / "train", classes=4, per_class=per_class, size=40, seed=0)
    make_synthetic_dataset(root / "val", classes=4, per_class=val_per_class, size=40, seed=1)
    return root


def train_args(data: Path, out: Path, name: str, batch_size: int, extra: list[str] = (), resume: bool = True) -> list:
    """`volo train debug ...` arguments for the tiny run."""
    args = ["train", "debug", "--data", str(data), "--out", str(out), "--name", name]
    if resume:
        args += ["--resume", "auto"]
    for item in [*TINY, f"train.batch_size={batch_size}", *extra]:
        args += ["--set", item]
    return args


def env(**extra: str) -> dict[str, str]:
    """The test environment for a child: one thread per process, no GPU, plus `extra`."""
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", PYTHONWARNINGS="default")
    out.update(extra)
    return out


def torchrun_cmd(nproc: int, args: list[str], max_restarts: int = 0, record: bool = False) -> list[str]:
    """`python -m torch.distributed.run` for `nproc` local workers running `volo <args>`."""
    cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.2",
        "--shutdown-timeout=3",
    ]
    entry = [str(RECORD_WORKER)] if record else ["-m", "volo.cli.main"]
    return cmd + entry + args


def volo_cmd(args: list[str], record: bool = False) -> list[str]:
    """A single-process `volo <args>` (optionally through the sample-recording worker)."""
    return [PYTHON, str(RECORD_WORKER), *args] if record else [PYTHON, "-m", "volo.cli.main", *args]


@dataclass
class Finished:
    returncode: int
    output: str
    """stdout and stderr together."""
    seconds: float


def run(cmd: list[str], timeout: float, **env_extra: str) -> Finished:
    """Run to completion in its own process group; on timeout kill the group and fail loudly."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(**env_extra),
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:6])} ... did not finish within {timeout} s:\n{out[-4000:]}") from None
    return Finished(proc.returncode, out, time.monotonic() - t0)


def start(cmd: list[str], log: Path, **env_extra: str) -> subprocess.Popen:
    """Start in the background, output to `log`, in a new process group."""
    fh = open(log, "w")  # noqa: SIM115 - closed by the child's exit; the test reads the file
    return subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=env(**env_extra), cwd=REPO, start_new_session=True
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launch and everything it started (its own session), continuing stopped ones first."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.05):
    """Poll `predicate()` until it returns a truthy value; fail after `timeout` s or when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited (code {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def children(pid: int) -> list[int]:
    """Direct child pids (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        for child in children(todo.pop()):
            seen.append(child)
            todo.append(child)
    return seen


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """{RANK: pid} of the torchrun workers below `launcher_pid` (read from each process's environment)."""
    ranks = {}
    for pid in descendants(launcher_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in values and b"LOCAL_RANK" in values:
            ranks[int(values[b"RANK"])] = pid
    return ranks


def latest_step(checkpoints: Path) -> int:
    """Step of the checkpoint the `latest` pointer names (-1 when there is none yet)."""
    try:
        name = (checkpoints / "latest").read_text().strip()
    except OSError:
        return -1
    digits = name.split("step")[-1].split(".")[0]
    return int(digits) if digits.isdigit() else -1


# -- damaging files ---------------------------------------------------------------------------------------------
def truncate(path: Path, keep: int) -> None:
    """Cut `path` to its first `keep` bytes."""
    with open(path, "r+b") as f:
        f.truncate(keep)


def zero(path: Path) -> None:
    """Overwrite `path` with zero bytes of the same length."""
    path.write_bytes(bytes(path.stat().st_size))
