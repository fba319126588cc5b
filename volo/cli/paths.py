"""Checks of the paths a sub-command will write into, made before any work starts (one-line errors)."""

from __future__ import annotations

from pathlib import Path

from volo.errors import VoloError


def require_output_dir(path: str | Path, flag: str) -> Path:
    """`path` as a Path when it is a folder or can be created as one; VoloError naming `flag` when it, or a folder
    above it, is an existing file (mkdir would fail there with NotADirectoryError / FileExistsError)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                where = "is a file" if part == path else f"lies under {part}, which is a file"
                raise VoloError(f"{flag} {path} {where}, not a folder; pass a folder path (created if missing).")
            break
    return path
