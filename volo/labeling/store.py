"""The sharded token-label store: few large files for shared storage, random access by image, checksums.

Layout of a store directory (all arrays C-contiguous .npy, readable with `np.load(mmap_mode='r')`):

    manifest.json             format/version, teacher, num_classes, topk, map (h, w), teacher input size, region,
                              and the shard list: name, row count, image keys in row order, sha256 of both files
    shard-00000.values.npy    float16 (n, k, h, w): top-k teacher logits per map cell, best first
    shard-00000.ids.npy       int16 (n, k, h, w) class ids (int32 when num_classes > 32767)
    shard-00000.json          the shard's own record (written last: a shard with it is finished; resume skips it)

Region covered by a map: the WHOLE image, resized without cropping and without keeping the aspect ratio to the
teacher's square input (T x T, bicubic); the map is the teacher's final feature map (h = w = T / stride). Cell
(r, c) covers rows [r/h, (r+1)/h) and columns [c/w, (c+1)/w) of the original image, in fractions of its height and
width, which is exactly the [-1, 1] frame `Batch.label_transform` maps into.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from volo.atomic import atomic_write, atomic_write_text
from volo.errors import VoloError
from volo.labeling.source import TokenLabel

MANIFEST = "manifest.json"
FORMAT = "volo-token-labels"
VERSION = 1


@dataclass
class StoreMeta:
    """What every map in a store is: written into manifest.json."""

    num_classes: int
    topk: int
    map_size: tuple[int, int]
    """(h, w) of every map."""
    teacher: str
    """The teacher as given to `volo label` (checkpoint path or model name)."""
    teacher_input_size: int
    """T: images were resized (whole, squashed) to T x T before the teacher."""
    region: str = "whole image, resized without crop (aspect not kept) to teacher_input_size x teacher_input_size"
    classes: list[str] = field(default_factory=list)
    """The dataset's class folders in label order (class id i is classes[i] when the teacher has those classes)."""


@dataclass
class ShardRecord:
    name: str
    keys: list[str]
    """Image keys in row order."""
    values_sha256: str
    ids_sha256: str
    unreadable: list[str] = field(default_factory=list)
    """Images of this shard's range that could not be decoded (no row)."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def _atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_text(json.dumps(obj), path)


def ids_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max else np.dtype(np.int32)


def write_shard(
    root: Path, index: int, keys: list[str], values: np.ndarray, ids: np.ndarray, unreadable: list[str]
) -> ShardRecord:
    """Write one finished shard: values (n, k, h, w) fp16, ids (n, k, h, w) int, then its record (last)."""
    assert values.shape == ids.shape and values.shape[0] == len(keys), (values.shape, ids.shape, len(keys))
    name = shard_name(index)
    root.mkdir(parents=True, exist_ok=True)
    _atomic_save_npy(root / f"{name}.values.npy", np.ascontiguousarray(values, dtype=np.float16))
    _atomic_save_npy(root / f"{name}.ids.npy", np.ascontiguousarray(ids))
    record = ShardRecord(
        name,
        keys,
        sha256_file(root / f"{name}.values.npy"),
        sha256_file(root / f"{name}.ids.npy"),
        unreadable,
    )
    _atomic_write_json(root / f"{name}.json", asdict(record))
    return record


def read_shard_record(root: Path, index: int) -> ShardRecord | None:
    """The record of a finished shard, or None when the shard is missing or unfinished."""
    path = root / f"{shard_name(index)}.json"
    if not path.is_file():
        return None
    try:
        return ShardRecord(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def write_manifest(root: Path, meta: StoreMeta, records: list[ShardRecord]) -> Path:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **asdict(meta),
        "ids_dtype": ids_dtype(meta.num_classes).name,
        "shards": [asdict(r) for r in records],
    }
    path = root / MANIFEST
    _atomic_write_json(path, manifest)
    return path


class ShardedLabelStore:
    """Random access to a sharded store by image key; shards are memory-mapped on first use (per process)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise VoloError(
                f"Cannot read the token-label manifest {path} ({err}); regenerate it with `volo label`."
            ) from err
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise VoloError(f"{path} is not a {FORMAT} v{VERSION} manifest; regenerate the store with `volo label`.")
        self.meta = StoreMeta(
            num_classes=manifest["num_classes"],
            topk=manifest["topk"],
            map_size=tuple(manifest["map_size"]),
            teacher=manifest["teacher"],
            teacher_input_size=manifest["teacher_input_size"],
            region=manifest["region"],
            classes=manifest.get("classes", []),
        )
        self.num_classes: int | None = self.meta.num_classes
        self.topk = self.meta.topk
        self.map_size = self.meta.map_size
        self.shards = [ShardRecord(**s) for s in manifest["shards"]]
        self.index = {key: (s, row) for s, rec in enumerate(self.shards) for row, key in enumerate(rec.keys)}
        self._unreadable = {k for rec in self.shards for k in rec.unreadable}
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict:  # DataLoader workers re-open their own memory maps
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def keys(self) -> set[str]:
        return set(self.index)

    def unreadable(self) -> set[str]:
        return self._unreadable

    def _shard_arrays(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._arrays:
            name = self.shards[s].name
            try:
                values = np.load(self.root / f"{name}.values.npy", mmap_mode="r")
                ids = np.load(self.root / f"{name}.ids.npy", mmap_mode="r")
            except (OSError, ValueError) as err:
                raise VoloError(
                    f"Token-label shard {self.root / name} is missing or damaged ({err}); "
                    f"run `volo label --verify {self.root}` and regenerate the store."
                ) from err
            self._arrays[s] = (values, ids)
        return self._arrays[s]

    def get(self, key: str) -> TokenLabel:
        try:
            s, row = self.index[key]
        except KeyError:
            raise VoloError(f"Image {key!r} has no token label in {self.root}; regenerate the store.") from None
        values, ids = self._shard_arrays(s)
        return TokenLabel(np.array(values[row]), np.array(ids[row]))

    def verify(self, checksums: bool = True) -> list[str]:
        """Problems found (empty list: the store is sound): shapes, dtypes, row counts and, optionally, sha256."""
        problems = []
        k, (h, w) = self.topk, self.map_size
        for s, rec in enumerate(self.shards):
            try:
                values, ids = self._shard_arrays(s)
            except VoloError as err:
                problems.append(str(err))
                continue
            expected = (len(rec.keys), k, h, w)
            if values.shape != expected or ids.shape != expected:
                problems.append(f"{rec.name}: shapes {values.shape}/{ids.shape}, expected {expected}")
            if values.dtype != np.float16 or ids.dtype != ids_dtype(self.meta.num_classes):
                problems.append(f"{rec.name}: dtypes {values.dtype}/{ids.dtype}")
            if checksums:
                for kind, digest in (("values", rec.values_sha256), ("ids", rec.ids_sha256)):
                    if sha256_file(self.root / f"{rec.name}.{kind}.npy") != digest:
                        problems.append(f"{rec.name}.{kind}.npy: checksum mismatch (file changed or truncated)")
        return problems
