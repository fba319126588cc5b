"""Damaged checkpoints and failed saves.

The newest checkpoint truncated, half-written, zeroed, emptied or replaced by garbage, or the `latest` pointer left
dangling: resume falls back to the previous good checkpoint with a warning naming the bad file, and the run
finishes. A failed save (ENOSPC from a monkeypatched write; EACCES from a real read-only folder as an unprivileged
user) leaves the previous checkpoint and the pointer untouched and is reported as one sentence.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import truncate, zero
from faults.checkpoints import NEWEST, PREVIOUS, copy_checkpoints, finished_run, one_epoch_config, resume_auto

from volo.errors import VoloError
from volo.training import checkpoint as ckpt_mod
from volo.training.checkpoint import CheckpointManager, load_checkpoint
from volo.training.faults import save_checkpoint_together
from volo.training.trainer import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    return finished_run(tmp_path_factory.mktemp("ckpt"))


DAMAGE = {
    "truncated": lambda p: truncate(p, 100),
    "half-written": lambda p: truncate(p, p.stat().st_size // 2),
    "zeroed": zero,
    "empty": lambda p: truncate(p, 0),
    "garbage": lambda p: p.write_bytes(os.urandom(p.stat().st_size)),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_newest_falls_back_with_warning(finished, tmp_path: Path, kind: str):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    DAMAGE[kind](ckpts / NEWEST)
    (ckpts / f".{NEWEST}.tmp4242").write_bytes(b"half of a write that never finished")  # a leftover temp file
    path, notes = resume_auto(ckpts)
    assert path.name == PREVIOUS
    assert any(f"Skipping damaged checkpoint {ckpts / NEWEST}" in n for n in notes), notes


def test_two_damaged_fall_back_two(finished, tmp_path: Path):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    zero(ckpts / NEWEST)
    truncate(ckpts / PREVIOUS, 10)
    path, notes = resume_auto(ckpts)
    assert path.name == "step000000002.pt" and sum("Skipping damaged" in n for n in notes) == 2


def test_dangling_latest_pointer_is_named(finished, tmp_path: Path):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    (ckpts / NEWEST).unlink()
    (ckpts / "best.pt").unlink(missing_ok=True)
    path, notes = resume_auto(ckpts)
    assert path.name == PREVIOUS
    assert any(f"pointer {ckpts / 'latest'} names {NEWEST}, which does not exist" in n for n in notes), notes


def test_resume_after_damage_finishes_the_run(finished, tmp_path: Path):
    data, run_dir = finished
    ckpts = copy_checkpoints(run_dir, tmp_path)
    truncate(ckpts / NEWEST, (ckpts / NEWEST).stat().st_size // 2)
    cfg = one_epoch_config(data, tmp_path / "runs", run_dir.name)
    with pytest.warns(UserWarning, match=f"Skipping damaged checkpoint {ckpts / NEWEST}"):
        result = train(cfg, resume="auto")
    assert result.metrics["steps"] == 4 and result.metrics["epochs"] == 1
    assert load_checkpoint(ckpts / NEWEST).progress.step == 4  # rewritten whole by the resumed run
    rows = [json.loads(line) for line in (ckpts.parent / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-1] == 4
    print("\nRELIABILITY damaged: fell back from the half-written step 4 to step 3, redid 1 step, finished")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_space_left_keeps_previous_and_reports(finished, tmp_path: Path, monkeypatch):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    ckpt = load_checkpoint(ckpts / NEWEST)
    ckpt.progress.step = 5
    before = {p.name: _digest(p) for p in ckpts.iterdir()}

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"\x80" * 4096)  # part of the file reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    manager = CheckpointManager(ckpts, keep_last=2)  # pruning would delete old files if the save went through
    with pytest.raises(VoloError) as info:
        save_checkpoint_together(manager, ckpt, epoch_end=False)
    msg = str(info.value)
    assert msg == (
        f"Could not write checkpoint {ckpts / 'step000000005.pt'} (OSError: No space left on device); the previous "
        f"checkpoint {ckpts / NEWEST} is intact. Free disk space or fix the folder's permissions "
        "(checkpoint.output_dir), then relaunch with --resume auto."
    )
    assert {p.name: _digest(p) for p in ckpts.iterdir()} == before  # nothing added, removed or changed
    print(f"\nRELIABILITY enospc: {msg[:100]}...")


def test_no_space_during_training_stops_with_one_line(finished, tmp_path: Path, monkeypatch):
    data = finished[0]
    real_save, calls = torch.save, {"n": 0}

    def fails_on_third(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod.torch, "save", fails_on_third)
    with pytest.raises(VoloError, match="step000000003.pt.*No space left.*step000000002.pt is intact"):
        train(one_epoch_config(data, tmp_path / "runs", "full"))
    ckpts = tmp_path / "runs" / "full" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step000000002.pt"
    names = sorted(p.name for p in ckpts.iterdir() if not p.name.endswith(".sha256"))
    assert names == ["latest", "step000000001.pt", "step000000002.pt"]
    assert load_checkpoint(ckpts / "step000000002.pt").progress.step == 2


PERMISSION_SCRIPT = """
import sys, warnings
from pathlib import Path
from volo.errors import VoloError
from volo.training.checkpoint import CheckpointManager, load_checkpoint
from volo.training.faults import save_checkpoint_together
ckpts = Path(sys.argv[1])
ckpt = load_checkpoint(ckpts / sys.argv[2])
ckpt.progress.step = 5
try:
    save_checkpoint_together(CheckpointManager(ckpts), ckpt, epoch_end=False)
except VoloError as err:
    print(err)
"""


def test_read_only_folder_keeps_previous_and_reports(finished, tmp_path: Path):
    """A real EACCES from the kernel: the folder is read-only (mode 555) and the writer cannot override that."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"volo-ro-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    ckpts = base / "checkpoints"
    shutil.copytree(finished[1] / "checkpoints", ckpts)
    before = {p.name: _digest(p) for p in ckpts.iterdir()}
    for p in [base, *ckpts.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    ckpts.chmod(0o555)
    cmd = [sys.executable, "-c", PERMISSION_SCRIPT, str(ckpts), NEWEST]
    if os.geteuid() == 0:  # root ignores file modes: drop the capabilities that let it (the kernel then says EACCES)
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, cwd="/", env=dict(os.environ, OMP_NUM_THREADS="1")
        )
    finally:
        ckpts.chmod(0o755)
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        msg = proc.stdout.strip()
        assert msg.startswith(
            f"Could not write checkpoint {ckpts / 'step000000005.pt'} (PermissionError: "
            "Permission denied); the previous checkpoint"
        ), msg
        assert f"{ckpts / NEWEST} is intact" in msg
        assert {p.name: _digest(p) for p in ckpts.iterdir()} == before
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nRELIABILITY eacces: {msg[:110]}...")
