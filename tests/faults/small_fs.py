"""A real small file system for disk-full tests: a tmpfs of a given size mounted on a test folder.

Needs the mount capability (root in a container that allows it); tests skip cleanly where mounting is refused.
A loop device would need the same capability, so there is no fallback to try.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` (rounded up to 4 KiB pages) at `where`; unmount on exit."""
    where.mkdir(parents=True, exist_ok=True)
    pages = -(-size_bytes // 4096)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={pages * 4}k,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'mount failed'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Write a filler file so that about `leave_bytes` stay free on `folder`'s file system."""
    import os

    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))
    return filler
