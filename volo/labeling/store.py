"""The sharded token-label store: few large files for shared storage, random access by image, checksums.

Layout of a store directory (all arrays C-contiguous .npy, readable with `np.load(mmap_mode='r')`):

    manifest.json             format/version, teacher (and the sha256 of its weights), num_classes, topk, map (h, w),
                              teacher input size, region, and the shard list: name, image keys in row order, a
                              fingerprint per image (file size + hash of its first 4 KiB), sha256 of both files
    shard-00000.values.npy    float16 (n, k, h, w): top-k teacher logits per map cell, best first
    shard-00000.ids.npy       int16 (n, k, h, w) class ids (int32 when num_classes > 32767)
    shard-00000.json          the shard's own record (written last: a shard with it is finished; resume skips it)

Region covered by a map: the WHOLE image, resized without cropping and without keeping the aspect ratio to the
teacher's square input (T x T, bicubic); the map is the teacher's final feature map (h = w = T / stride). Cell
(r, c) covers rows [r/h, (r+1)/h) and columns [c/w, (c+1)/w) of the original image, in fractions of its height and
width, which is exactly the [-1, 1] frame `Batch.label_transform` maps into.

Reading trusts nothing: the manifest's schema and types are checked (one-line error naming the key), shard names
must be `shard-NNNNN` (no path can lead outside the store), and class ids are range-checked against num_classes
(`verify`: a min/max over every memory-mapped shard; `get`: the row it returns).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from volo.atomic import atomic_write, atomic_write_text
from volo.errors import VoloError
from volo.labeling.token_label import TokenLabel

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
    teacher_sha256: str = ""
    """sha256 of the teacher's weights (its state_dict tensors), "" in stores made before it was recorded."""


@dataclass
class ShardRecord:
    name: str
    keys: list[str]
    """Image keys in row order."""
    values_sha256: str
    ids_sha256: str
    unreadable: list[str] = field(default_factory=list)
    """Images of this shard's range that could not be decoded (no row)."""
    fingerprints: list[str] = field(default_factory=list)
    """`image_fingerprint` of each key in row order (empty in stores made before they were recorded)."""


SHARD_NAME = re.compile(r"shard-\d{5}")
FINGERPRINT_BYTES = 4096


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def image_fingerprint(path: Path) -> str:
    """`<size>:<sha256 of the first 4 KiB, 16 hex>`: cheap, survives a copy, differs between two photos."""
    with open(path, "rb") as f:
        head = f.read(FINGERPRINT_BYTES)
        size = f.seek(0, 2)
    return f"{size}:{hashlib.sha256(head).hexdigest()[:16]}"


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
    root: Path,
    index: int,
    keys: list[str],
    values: np.ndarray,
    ids: np.ndarray,
    unreadable: list[str],
    fingerprints: list[str] | None = None,
) -> ShardRecord:
    """Write one finished shard: values (n, k, h, w) fp16, ids (n, k, h, w) int, then its record (last)."""
    assert values.shape == ids.shape and values.shape[0] == len(keys), (values.shape, ids.shape, len(keys))
    assert fingerprints is None or len(fingerprints) == len(keys)
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
        list(fingerprints or []),
    )
    _atomic_write_json(root / f"{name}.json", asdict(record))
    return record


def read_shard_record(root: Path, index: int) -> ShardRecord | None:
    """The record of a finished shard, or None when the shard is missing or unfinished."""
    path = root / f"{shard_name(index)}.json"
    if not path.is_file():
        return None
    try:
        record = parse_shard_record(json.loads(path.read_text()))
    except (OSError, ValueError):  # unreadable, not JSON, not UTF-8, or not a record: the shard is redone
        return None
    return record if record.name == shard_name(index) else None


def _fail(what: str) -> None:
    raise ValueError(what)


def _check_type(obj: dict, key: str, kind: type, where: str) -> None:
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(f"{where}{key} is {type(value).__name__} {str(value)[:40]!r}, expected {kind.__name__}")


def _check_keys(obj: object, required: set[str], optional: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        _fail(f"{where or 'the manifest'} is a JSON {type(obj).__name__}, expected an object")
    missing, extra = sorted(required - set(obj)), sorted(set(obj) - required - optional)
    if missing:
        _fail(f"{where}keys {missing} are missing")
    if extra:
        _fail(f"{where}keys {extra} are unknown")


def _str_list(obj: dict, key: str, where: str) -> None:
    _check_type(obj, key, list, where)
    if not all(isinstance(v, str) for v in obj[key]):
        _fail(f"{where}{key} holds non-strings")


def parse_shard_record(obj: object, where: str = "") -> ShardRecord:
    """A `ShardRecord` from JSON, or ValueError naming the first bad field."""
    fields = {"name", "keys", "values_sha256", "ids_sha256", "unreadable"}
    _check_keys(obj, fields, {"fingerprints"}, where)
    for key in ("name", "values_sha256", "ids_sha256"):
        _check_type(obj, key, str, where)
    if not SHARD_NAME.fullmatch(obj["name"]):
        _fail(f"{where}name {obj['name'][:60]!r} is not of the form shard-NNNNN (names must stay inside the store)")
    for key in ("keys", "unreadable", "fingerprints"):
        if key in obj:
            _str_list(obj, key, where)
    if obj.get("fingerprints") and len(obj["fingerprints"]) != len(obj["keys"]):
        _fail(f"{where}fingerprints has {len(obj['fingerprints'])} entries for {len(obj['keys'])} keys")
    return ShardRecord(**obj)


def parse_manifest(obj: object, path: Path) -> tuple[StoreMeta, list[ShardRecord]]:
    """Check a manifest's schema, types and ranges; VoloError (one line) naming what is wrong."""
    try:
        if isinstance(obj, dict) and (obj.get("format") != FORMAT or obj.get("version") != VERSION):
            raise VoloError(f"{path} is not a {FORMAT} v{VERSION} manifest; regenerate the store with `volo label`.")
        optional = {"teacher_sha256", "classes"}  # absent from stores made by earlier versions
        required = set(StoreMeta.__dataclass_fields__) - optional | {"format", "version", "ids_dtype", "shards"}
        _check_keys(obj, required, optional, "")
        for key, kind in (("num_classes", int), ("topk", int), ("teacher_input_size", int), ("map_size", list)):
            _check_type(obj, key, kind, "")
        for key in ("teacher", "region", "ids_dtype") + (("teacher_sha256",) if "teacher_sha256" in obj else ()):
            _check_type(obj, key, str, "")
        if "classes" in obj:
            _str_list(obj, "classes", "")
        _check_type(obj, "shards", list, "")
        k, size = obj["num_classes"], obj["map_size"]
        if k < 1 or not 1 <= obj["topk"] <= k or obj["teacher_input_size"] < 1:
            _fail(f"num_classes {k}, topk {obj['topk']}, teacher_input_size {obj['teacher_input_size']} are invalid")
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            _fail(f"map_size {str(size)[:40]} is not two positive integers")
        if obj["ids_dtype"] != ids_dtype(k).name:
            _fail(f"ids_dtype {obj['ids_dtype'][:20]!r} is not {ids_dtype(k).name} (for {k} classes)")
        records = [parse_shard_record(s, f"shards[{i}].") for i, s in enumerate(obj["shards"])]
    except ValueError as err:
        if isinstance(err, VoloError):
            raise
        raise VoloError(
            f"{path} is not a valid token-label manifest ({err}); regenerate the store with `volo label`."
        ) from None
    fields = {f: obj[f] for f in StoreMeta.__dataclass_fields__ if f in obj}
    return StoreMeta(**{**fields, "map_size": tuple(size)}), records


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
        except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8 text at all
            reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
            raise VoloError(
                f"Cannot read the token-label manifest {path} ({reason}); regenerate it with `volo label`."
            ) from None
        self.meta, self.shards = parse_manifest(manifest, path)
        self.num_classes: int | None = self.meta.num_classes
        self.topk = self.meta.topk
        self.map_size = self.meta.map_size
        self.index = {key: (s, row) for s, rec in enumerate(self.shards) for row, key in enumerate(rec.keys)}
        rows = sum(len(rec.keys) for rec in self.shards)
        if len(self.index) != rows:
            raise VoloError(
                f"{path} lists {rows - len(self.index)} image key(s) twice; regenerate the store with `volo label`."
            )
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

    def fingerprint(self, key: str) -> str | None:
        """The `image_fingerprint` recorded for `key` when the store was made (None in older stores)."""
        s, row = self.index[key]
        prints = self.shards[s].fingerprints
        return prints[row] if prints else None

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
        label = TokenLabel(np.array(values[row]), np.array(ids[row]))
        if label.ids.size and (int(label.ids.min()) < 0 or int(label.ids.max()) >= self.meta.num_classes):
            raise VoloError(
                f"The token label of {key!r} in {self.root} has class ids in [{int(label.ids.min())}, "
                f"{int(label.ids.max())}], outside [0, {self.meta.num_classes}); run `volo label --verify "
                f"{self.root}` and regenerate the store."
            )
        return label

    def verify(self, checksums: bool = True) -> list[str]:
        """Problems found (empty list: the store is sound): shapes, dtypes, row counts, class-id range (a min/max
        over every shard's ids) and, optionally, sha256."""
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
            elif ids.size:
                lo, hi = int(ids.min()), int(ids.max())
                if lo < 0 or hi >= self.meta.num_classes:
                    problems.append(f"{rec.name}: class ids span [{lo}, {hi}], outside [0, {self.meta.num_classes})")
            if checksums:
                for kind, digest in (("values", rec.values_sha256), ("ids", rec.ids_sha256)):
                    if sha256_file(self.root / f"{rec.name}.{kind}.npy") != digest:
                        problems.append(f"{rec.name}.{kind}.npy: checksum mismatch (file changed or truncated)")
        return problems
