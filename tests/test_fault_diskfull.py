"""A real full disk: a small tmpfs under the run folder (skipped where this machine cannot mount one).

torch's zip writer turns the kernel's ENOSPC into `RuntimeError: ... unexpected pos`, safetensors into a
`SafetensorError`; both must end as the one-line failed-save error with every earlier file intact and no temp file
left, not as a traceback.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
import torch
from faults import make_data, tiny_config
from faults.small_fs import fill, small_tmpfs

from volo.errors import VoloError
from volo.models.registry import create_model
from volo.models.weights import read_state_dict, save_weights
from volo.training.checkpoint import atomic_torch_save, load_checkpoint
from volo.training.trainer import train

MB = 1 << 20


def _cfg(data: Path, out: Path, name: str, *extra: str):
    return tiny_config(data, out, name, "schedule.epochs=1", "schedule.warmup_epochs=0", *extra)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("diskfull_data"))


def test_torch_zip_writer_error_becomes_enospc(tmp_path: Path):
    """The fault as torch reports it (RuntimeError), and as the atomic writer reports it (OSError ENOSPC)."""
    obj = {"w": torch.randn(256 * 1024)}  # 1 MiB
    with small_tmpfs(tmp_path / "fs", MB // 2) as fs:
        with pytest.raises(RuntimeError, match="unexpected pos"):
            torch.save(obj, fs / "plain.pt")
        (fs / "plain.pt").unlink()
        with pytest.raises(OSError) as info:
            atomic_torch_save(obj, fs / "atomic.pt", checksum=True)
        assert info.value.errno == errno.ENOSPC
        assert sorted(p.name for p in fs.iterdir()) == []  # no temp file, no checksum of a file that is not there


def test_full_disk_during_training_keeps_the_previous_checkpoint(data: Path, tmp_path: Path):
    train(_cfg(data, tmp_path / "probe", "probe", "train.max_steps=1"))
    size = (tmp_path / "probe" / "probe" / "checkpoints" / "step000000001.pt").stat().st_size
    # room for two checkpoints, their checksums, the metrics and half of a third checkpoint
    with small_tmpfs(tmp_path / "fs", 2 * size + size // 2 + 64 * 1024) as fs:
        with pytest.raises(VoloError) as info:
            train(_cfg(data, fs, "full"))
        ckpts = fs / "full" / "checkpoints"
        msg = str(info.value)
        assert msg == (
            f"Could not write checkpoint {ckpts / 'step000000003.pt'} (OSError: No space left on device); the "
            f"previous checkpoint {ckpts / 'step000000002.pt'} is intact. Free disk space or fix the folder's "
            "permissions (checkpoint.output_dir), then relaunch with --resume auto."
        )
        assert (ckpts / "latest").read_text().strip() == "step000000002.pt"
        assert load_checkpoint(ckpts / "step000000002.pt").progress.step == 2  # checksum verified, fields checked
        assert not [p for p in ckpts.iterdir() if ".tmp" in p.name]
    print(f"\nRELIABILITY disk-full (real tmpfs): {msg[:110]}...")


def test_full_disk_during_weights_export_keeps_the_previous_file(tmp_path: Path):
    model = create_model("volo_tiny", img_size=32, num_classes=4)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with small_tmpfs(tmp_path / "fs", 2 * size + 256 * 1024) as fs:
        good = save_weights(model, fs / "final")
        before = _digest(good)
        fill(fs, leave_bytes=size // 2)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        with pytest.raises(OSError) as info:
            save_weights(model, fs / "final")
        assert info.value.errno == errno.ENOSPC
        assert _digest(good) == before
        assert not [p for p in fs.iterdir() if ".tmp" in p.name]
        assert set(read_state_dict(good)) == set(model.state_dict())


def test_full_disk_at_the_best_export_stops_with_one_line(data: Path, tmp_path: Path):
    """weights/ on its own tiny file system: the epoch-end export fails, the run stops cleanly on every rank."""
    out = tmp_path / "runs"
    run_dir = out / "export"
    run_dir.mkdir(parents=True)
    with small_tmpfs(tmp_path / "fs", 64 * 1024) as fs:
        (run_dir / "weights").symlink_to(fs)
        with pytest.raises(VoloError) as info:
            train(_cfg(data, out, "export"), resume="auto")
        assert str(info.value).startswith(
            f"Could not write weights file {run_dir / 'weights' / 'best.safetensors'} (OSError: No space left on "
            "device); no earlier weights file exists."
        ), info.value
        ckpts = run_dir / "checkpoints"
        assert (ckpts / "latest").read_text().strip() == "step000000003.pt"
        assert load_checkpoint(ckpts / "step000000003.pt").progress.step == 3
        assert not [p for p in fs.iterdir() if ".tmp" in p.name]
