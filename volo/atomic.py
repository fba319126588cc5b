"""Atomic file writes: a temp file beside the target, flushed and fsynced, renamed over it, the folder fsynced.

A reader (or a resumed run after a crash) sees the old file or the new one, never half of one. Used for training
checkpoints and their `latest` pointer, and for the token-label store's shards, records and manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], binary: bool = True) -> Path:
    """Call `write(file)` on a temp file beside `path`, then make it `path` atomically; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)
