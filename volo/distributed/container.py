"""pyxis container mounts: parse `--container-mounts`, translate host paths to the paths the ranks see inside.

pyxis takes `SRC:DST[:FLAGS]` or a single `PATH` (mounted at the same path), comma-separated. A rank inside the
container must be given DST paths: with `--container-mounts /lustre:/mnt/lustre` the host's `/lustre/imagenet` is
`/mnt/lustre/imagenet` inside. A host path no mount covers is mounted at its own path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from volo.errors import VoloError


@dataclass(frozen=True)
class Mount:
    """One pyxis mount: host `source` appears at `target` inside the container."""

    source: PurePosixPath
    target: PurePosixPath
    flags: str = ""
    """pyxis mount flags such as `ro` (kept as given)."""

    @classmethod
    def parse(cls, text: str) -> Mount:
        parts = text.split(":")
        if len(parts) > 3 or not all(parts[:2]):
            raise VoloError(f"--container-mounts entry {text!r} must look like SRC:DST[:FLAGS] or PATH.")
        source = PurePosixPath(parts[0])
        target = PurePosixPath(parts[1]) if len(parts) > 1 else source
        if not source.is_absolute() or not target.is_absolute():
            raise VoloError(
                f"--container-mounts entry {text!r}: both paths must be absolute (/host/path:/in/container)."
            )
        return cls(source, target, parts[2] if len(parts) > 2 else "")

    def spec(self) -> str:
        text = f"{self.source}:{self.target}"
        return f"{text}:{self.flags}" if self.flags else text

    def inside(self, host_path: PurePosixPath) -> PurePosixPath | None:
        """`host_path` as seen inside the container through this mount, or None when the mount does not cover it."""
        if host_path == self.source or self.source in host_path.parents:
            return self.target / host_path.relative_to(self.source)
        return None


def parse_mounts(items: tuple[str, ...] | list[str]) -> list[Mount]:
    """Every `--container-mounts` entry (already split at commas)."""
    return [Mount.parse(item) for item in items if item]


def container_path(host_path: PurePosixPath, mounts: list[Mount]) -> PurePosixPath | None:
    """`host_path` inside the container through the most specific mount covering it; None when none does."""
    best: tuple[int, PurePosixPath] | None = None
    for mount in mounts:
        inside = mount.inside(host_path)
        if inside is not None and (best is None or len(mount.source.parts) > best[0]):
            best = (len(mount.source.parts), inside)
    return best[1] if best else None


def mounts_for(
    mounts: list[Mount], host_paths: list[PurePosixPath]
) -> tuple[list[Mount], dict[PurePosixPath, PurePosixPath]]:
    """The mounts to pass (the given ones plus `path:path` for every host path none covers) and each host path's
    path inside the container."""
    mounts = list(mounts)
    inside: dict[PurePosixPath, PurePosixPath] = {}
    for path in host_paths:
        translated = container_path(path, mounts)
        if translated is None:
            mounts.append(Mount(path, path))
            translated = path
        inside[path] = translated
    return mounts, inside
