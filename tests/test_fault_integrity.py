"""Checkpoints judged by content, not by name: one flipped bit, wrong field types, a damaged file with a higher
step number than the run, and orphan temp files of a killed save.

Every damaged file here is a real file on disk: a real checkpoint with one bit of a weight tensor flipped, a real
checkpoint re-saved with a field of the wrong type, random bytes under a checkpoint name.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from faults.checkpoints import NEWEST, PREVIOUS, copy_checkpoints, finished_run, one_epoch_config, resume_auto

from volo.training.checkpoint import load_checkpoint
from volo.training.trainer import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    return finished_run(tmp_path_factory.mktemp("integrity"))


def flip_one_bit_in_a_weight(path: Path) -> str:
    """Flip the top exponent bit of one float32 in the largest tensor record of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as f:  # the record's data follows its local header (torch stores, never deflates)
            f.seek(info.header_offset + 26)
            name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    offset = info.header_offset + 30 + name_len + extra_len + (info.file_size // 8) * 4 + 3
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x40]))
    return info.filename


def _tensors(a, b, prefix=""):
    """(name, (tensor of a, tensor of b)) for every tensor in two nested checkpoint dicts of the same structure."""
    if torch.is_tensor(a):
        yield prefix, (a, b)
    elif isinstance(a, dict):
        for k in a:
            yield from _tensors(a[k], b[k], f"{prefix}.{k}")
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _tensors(x, y, f"{prefix}[{i}]")


def test_one_flipped_bit_is_caught_and_resume_falls_back(finished, tmp_path: Path):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    original = torch.load(ckpts / NEWEST, map_location="cpu", weights_only=True)
    flip_one_bit_in_a_weight(ckpts / NEWEST)
    flipped = torch.load(ckpts / NEWEST, map_location="cpu", weights_only=True)  # the zip still loads
    changed = [k for k, (a, b) in _tensors(original, flipped) if not torch.equal(a, b)]
    assert len(changed) == 1, "the flipped bit must land in one tensor"
    path, notes = resume_auto(ckpts)
    assert path.name == PREVIOUS, notes
    assert any(f"Skipping damaged checkpoint {ckpts / NEWEST}" in n and "SHA-256" in n for n in notes), notes
    print(f"\nRELIABILITY bit-flip: {changed[0]} changed by one bit; resume fell back to {PREVIOUS}")


WRONG_TYPES = {"version": "x", "world_size": "two", "optimizer": {}}


@pytest.mark.parametrize("field", list(WRONG_TYPES))
def test_wrong_field_type_is_damaged_not_a_traceback(finished, tmp_path: Path, field: str):
    ckpts = copy_checkpoints(finished[1], tmp_path)
    obj = torch.load(ckpts / NEWEST, map_location="cpu", weights_only=True)
    obj[field] = WRONG_TYPES[field]
    (ckpts / f"{NEWEST}.sha256").unlink(missing_ok=True)  # as written without a checksum (older volo)
    torch.save(obj, ckpts / NEWEST)
    path, notes = resume_auto(ckpts)
    assert path.name == PREVIOUS, notes
    assert any(f"damaged: field {field} must be" in n for n in notes), notes


def test_damaged_higher_step_file_does_not_prune_new_checkpoints(finished, tmp_path: Path):
    """keep_last=1 and random bytes named step 99: the resumed run keeps its own newest checkpoint."""
    data = finished[0]
    out = tmp_path / "runs"
    train(one_epoch_config(data, out, "prune", "checkpoint.keep_last=1", "train.max_steps=2"))
    ckpts = out / "prune" / "checkpoints"
    (ckpts / "step000000099.pt").write_bytes(os.urandom(50_000))
    (ckpts / ".step000000003.pt.tmp999999").write_bytes(b"half of a save that was SIGKILLed")
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint .*step000000099.pt"):
        result = train(one_epoch_config(data, out, "prune", "checkpoint.keep_last=1"), resume="auto")
    assert result.metrics["steps"] == 4
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["best.pt", "best.pt.sha256", NEWEST, f"{NEWEST}.sha256", "latest"], (
        names
    )  # no step 99, no orphan temp file
    assert load_checkpoint(ckpts / NEWEST).progress.step == 4
    rows = [json.loads(line) for line in (ckpts.parent / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
