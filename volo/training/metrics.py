"""Run metrics on disk: one JSON object per line (`*.jsonl`) and the same rows as CSV, per step and per epoch."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from volo.atomic import atomic_write_text


class MetricsLog:
    """Appends rows to `<dir>/<name>.jsonl` and `<dir>/<name>.csv` (rank 0 only; others pass enabled=False)."""

    def __init__(self, directory: Path, name: str, enabled: bool = True, sink=None):
        self.jsonl = Path(directory) / f"{name}.jsonl"
        self.csv = Path(directory) / f"{name}.csv"
        self.name, self.enabled = name, enabled
        self.sink = sink
        """Called as sink(name, row) after each row is written (TensorBoard / W&B, see `volo.training.loggers`)."""
        self._fields: list[str] | None = None
        if enabled and self.csv.is_file():  # resumed run: keep the header already written
            with self.csv.open() as f:
                header = f.readline().strip()
            self._fields = header.split(",") if header else None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        clean = {k: _plain(v) for k, v in row.items()}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._fields is None:
            self._fields = list(clean)
            with self.csv.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with self.csv.open("a", newline="") as f:
            csv.writer(f).writerow([clean.get(k, "") for k in self._fields])
        if self.sink is not None:
            self.sink(self.name, clean)


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a metrics file ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def write_per_class(path: str | Path, class_names: list[str], confusion) -> list[dict]:
    """`path` (CSV): class, images, top-1 % and the most frequent wrong prediction of every class with images,
    worst first; returns the rows."""
    rows = []
    for k, counts in enumerate(confusion.tolist()):
        total = sum(counts)
        if not total:
            continue
        wrong = max((c for i, c in enumerate(counts) if i != k), default=0)
        confused = next((i for i, c in enumerate(counts) if i != k and c == wrong and c), None)
        rows.append(
            {
                "class": class_names[k],
                "index": k,
                "images": total,
                "top1": 100.0 * counts[k] / total,
                "most_confused_with": class_names[confused] if confused is not None else "",
            }
        )
    rows.sort(key=lambda r: (r["top1"], r["class"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["class"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def drop_rows_after(directory: Path, step: int, epoch: int) -> int:
    """Rewrite steps.* keeping rows with step <= `step` and epochs.* keeping rows with epoch <= `epoch`.

    A resumed run redoes the steps after its checkpoint; their old rows (written before a crash, or before a fall
    back past a damaged checkpoint) would otherwise appear twice. Returns the number of rows dropped.
    """
    dropped = 0
    for name, key, last in (("steps", "step", step), ("epochs", "epoch", epoch)):
        jsonl = Path(directory) / f"{name}.jsonl"
        rows = read_jsonl(jsonl)
        keep = [r for r in rows if isinstance(r.get(key), int) and r[key] <= last]
        if len(keep) == len(rows):
            continue
        dropped += len(rows) - len(keep)
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), jsonl)
        csv_path = jsonl.with_suffix(".csv")
        if keep:
            fields = list(dict.fromkeys(k for r in keep for k in r))
            if csv_path.is_file():
                with csv_path.open() as f:
                    fields = f.readline().strip().split(",") or fields
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(fields)
            writer.writerows([r.get(k, "") for k in fields] for r in keep)
            atomic_write_text(buf.getvalue(), csv_path)
        else:
            csv_path.unlink(missing_ok=True)
    return dropped
