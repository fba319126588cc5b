"""Atomic file writes: a temp file beside the target, flushed and fsynced, renamed over it, the folder fsynced.

A reader (or a resumed run after a crash) sees the old file or the new one, never half of one. Used for training
checkpoints and their `latest` pointer, the weights export, and the token-label store's shards, records and manifest.

A write that fails leaves as an `OSError` whatever the writer made of it: torch's zip writer turns a full disk into
`RuntimeError: ... unexpected pos`, so the file object records the `OSError` its `write` raised and that is what
`atomic_write` raises. Temp files are named `.<name>.tmp<pid>`; `remove_orphan_temps` deletes those of other
processes (a killed save) in a folder only this process writes to.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(r"^\..+\.tmp(\d+)$")


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


class _RecordingFile:
    """A binary file whose failed `write` is remembered (C++ writers replace the OSError by their own error)."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()

    def __getattr__(self, name: str):  # tell, seek, fileno, ...: the real file's
        return getattr(self.f, name)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(
    path: str | Path,
    write: Callable[[IO[Any]], object],
    binary: bool = True,
    before_replace: Callable[[Path], object] | None = None,
) -> Path:
    """Call `write(file)` on a temp file beside `path`, then make it `path` atomically; returns `path`.

    `before_replace(temp_path)` runs once the temp file is complete and synced (e.g. to record its checksum).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            target = _RecordingFile(f) if binary else f
            try:
                write(target)
            except Exception as err:
                if isinstance(target, _RecordingFile) and target.error is not None and not isinstance(err, OSError):
                    raise target.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def remove_orphan_temps(directory: Path) -> list[Path]:
    """Delete `.<name>.tmp<pid>` files of other processes in `directory` (call it only while holding the folder)."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for p in Path(directory).iterdir():
        m = _TEMP_RE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
