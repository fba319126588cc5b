"""Run a teacher over an ImageFolder and write the sharded token-label store (`volo label`).

Work split: the sorted image list is cut into shards of `shard_size` consecutive images; shard s belongs to rank
s % world_size (torchrun's RANK / WORLD_SIZE), so every rank writes only its own shard files. A shard is finished
once its `shard-XXXXX.json` record exists (written after both arrays, atomically), so a killed run resumes by
skipping finished shards, even with another world size. Rank 0 writes manifest.json once every shard is finished.
Memory is bounded by one shard's arrays (shard_size x k x h x w) plus the loader's prefetched batches.
Provenance: run.json and the manifest record the sha256 of the teacher's weights (a resume with other weights is
refused: one store never mixes two teachers) and every image's fingerprint (size + hash of its first 4 KiB), which
the check before training compares with the dataset it is given.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from volo.atomic import atomic_write_text
from volo.data.dataset import ImageFolderDataset
from volo.data.transforms import WholeImageTransform
from volo.data.workers import cap_workers
from volo.errors import VoloError
from volo.labeling.quality import TeacherQuality
from volo.labeling.store import (
    StoreMeta,
    ids_dtype,
    image_fingerprint,
    read_shard_record,
    write_manifest,
    write_shard,
)
from volo.labeling.teacher import Teacher

RUN_FILE = "run.json"
"""Settings of the run that started the store; a resumed run must match them."""


@dataclass(frozen=True)
class GenerateConfig:
    data: Path
    """ImageFolder root (<data>/<class>/<image>)."""
    out: Path
    """Store directory (created)."""
    topk: int = 5
    batch_size: int = 64
    shard_size: int = 2048
    """Images per shard file (ImageNet-1k: 626 shards of ~6.6 MB values at k=5, 18x18)."""
    num_workers: int = 4
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    wait_timeout_s: float = 3600.0
    """How long rank 0 waits for the other ranks' shards before writing the manifest."""
    progress: bool = True
    class_map: list[int] | None = None
    """Dataset class i -> the teacher's class map[i] (classmap.py); None: the teacher's classes are the dataset's."""


@dataclass
class GenerateReport:
    images: int
    shards_written: int
    shards_skipped: int
    unreadable: int
    seconds: float
    manifest: Path | None
    quality: dict | None = None
    """This run's teacher quality (quality.py) over the images it labelled; also in teacher_quality.json."""


class _LabelingView(Dataset):
    """(index, image tensor or None): unreadable images are reported, not replaced."""

    def __init__(self, dataset: ImageFolderDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        img = self.dataset.load_image(i)
        return i, (None if img is None else self.dataset.transform(img).image)


def _collate(items: list[tuple[int, torch.Tensor | None]]) -> tuple[list[int], torch.Tensor | None, list[int]]:
    good = [(i, x) for i, x in items if x is not None]
    bad = [i for i, x in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


def env_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from torchrun's environment, (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state_dict (names, dtypes, shapes, bytes in key order): same weights, same hash."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_run_file(out: Path, run: dict) -> None:
    path = out / RUN_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if not any(out.glob("shard-*.json")):  # a start that failed before any shard finished: nothing to keep
            atomic_write_text(json.dumps(run, indent=1), path)
            return
        if not isinstance(previous, dict):
            raise VoloError(f"{path} is damaged (not a JSON object); delete {out} and label again.")
        diff = sorted(k for k in run if previous.get(k) != run[k])
        if diff == ["teacher_sha256"]:
            was = str(previous.get("teacher_sha256") or "not recorded")[:12]
            raise VoloError(
                f"{out} was started with other teacher weights (sha256 {was}..., now {run['teacher_sha256'][:12]}"
                "...); one store must not mix two teachers: resume with the same teacher checkpoint, or write to a "
                "new --out."
            )
        if diff:
            raise VoloError(
                f"{out} was started with other settings ({', '.join(diff)} differ); resume with the same --data, "
                "--teacher, --topk, --shard-size and size, or write to a new --out."
            )
        return
    atomic_write_text(json.dumps(run, indent=1), path)


def generate_labels(cfg: GenerateConfig, teacher: Teacher) -> GenerateReport:
    start = time.time()
    transform = WholeImageTransform(teacher.input_size, teacher.mean, teacher.std)
    dataset = ImageFolderDataset(cfg.data, transform)
    keys = [e.key for e in dataset.entries]
    cfg.out.mkdir(parents=True, exist_ok=True)
    teacher_sha256 = weights_sha256(teacher.model)
    run = {
        "data": str(Path(cfg.data).resolve()),
        "teacher": teacher.spec,
        "teacher_sha256": teacher_sha256,
        "topk": cfg.topk,
        "shard_size": cfg.shard_size,
        "teacher_input_size": teacher.input_size,
        "images": len(keys),
        "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }
    if cfg.class_map:
        run["class_map"] = list(cfg.class_map)
    num_classes = len(cfg.class_map) if cfg.class_map else teacher.num_classes
    if cfg.topk > num_classes:  # before run.json is written
        raise VoloError(f"--topk {cfg.topk} exceeds the {num_classes} classes labelled.")
    _check_run_file(cfg.out, run)
    class_map = torch.tensor(cfg.class_map) if cfg.class_map else None
    quality = TeacherQuality(num_classes)
    known_labels = cfg.class_map is not None or num_classes == len(dataset.classes)

    n_shards = math.ceil(len(keys) / cfg.shard_size)
    mine = [s for s in range(n_shards) if s % cfg.world_size == cfg.rank]
    todo = [s for s in mine if read_shard_record(cfg.out, s) is None]
    device = torch.device(cfg.device)
    teacher.model.to(device)
    id_type = ids_dtype(num_classes)
    probe = torch.zeros(1, 3, teacher.input_size, teacher.input_size, device=device)
    map_size = tuple(teacher.dense_logits(probe).shape[2:])
    written, unreadable = 0, 0
    batches = [
        list(range(b, min(b + cfg.batch_size, (s + 1) * cfg.shard_size, len(keys))))
        for s in todo
        for b in range(s * cfg.shard_size, min((s + 1) * cfg.shard_size, len(keys)), cfg.batch_size)
    ]
    loader = DataLoader(
        _LabelingView(dataset),
        batch_sampler=batches,
        num_workers=cap_workers(cfg.num_workers),
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    total = sum(len(b) for b in batches)
    bar = tqdm(total=total, unit="img", disable=not cfg.progress, desc=f"labels rank {cfg.rank}", smoothing=0.05)
    shard, values, ids, filled, bad = -1, None, None, [], []

    def flush() -> None:
        nonlocal written, unreadable
        if shard < 0:
            return
        rows = np.array(filled, dtype=np.int64) - shard * cfg.shard_size
        order = np.argsort(rows)
        row_keys = [keys[filled[j]] for j in order]
        prints = [image_fingerprint(dataset.root / key) for key in row_keys]
        write_shard(cfg.out, shard, row_keys, values[rows[order]], ids[rows[order]], [keys[i] for i in bad], prints)
        written += 1
        unreadable += len(bad)

    for indices, images, bad_indices in loader:
        first = (indices or bad_indices)[0]
        s = first // cfg.shard_size
        if s != shard:
            flush()
            shard, filled, bad = s, [], []
            size = min(cfg.shard_size, len(keys) - shard * cfg.shard_size)
            values = np.zeros((size, cfg.topk, *map_size), dtype=np.float16)
            ids = np.zeros((size, cfg.topk, *map_size), dtype=id_type)
        bad.extend(bad_indices)
        if images is not None:
            logits = teacher.dense_logits(images.to(device, non_blocking=True))  # (B, K, h, w)
            if class_map is not None:
                logits = logits[:, class_map.to(logits.device)]  # the dataset's classes, in its order
            top = logits.topk(cfg.topk, dim=1)
            labels = torch.tensor([dataset.entries[i].label for i in indices]) if known_labels else None
            quality.update(top.values, top.indices, labels)
            rows = np.array(indices) - shard * cfg.shard_size
            values[rows] = top.values.half().cpu().numpy()
            ids[rows] = top.indices.cpu().numpy().astype(id_type)
            filled.extend(indices)
        bar.update(len(indices) + len(bad_indices))
    flush()
    bar.close()

    manifest = None
    if cfg.rank == 0:
        records = _wait_for_shards(cfg.out, n_shards, cfg.wait_timeout_s)
        meta = StoreMeta(
            num_classes=num_classes,
            topk=cfg.topk,
            map_size=map_size,
            teacher=teacher.spec,
            teacher_input_size=teacher.input_size,
            classes=dataset.classes,
            teacher_sha256=teacher_sha256,
        )
        manifest = write_manifest(cfg.out, meta, records)
    name = "teacher_quality.json" if cfg.world_size == 1 else f"teacher_quality.rank{cfg.rank}.json"
    atomic_write_text(json.dumps(quality.to_dict(), indent=1), cfg.out / name)
    for warning in quality.warnings():
        print(f"volo label: warning: {warning}", flush=True)
    seconds = time.time() - start
    return GenerateReport(len(keys), written, len(mine) - len(todo), unreadable, seconds, manifest, quality.summary())


def _wait_for_shards(out: Path, n_shards: int, timeout_s: float) -> list:
    deadline = time.time() + timeout_s
    while True:
        records = [read_shard_record(out, s) for s in range(n_shards)]
        missing = [s for s, r in enumerate(records) if r is None]
        if not missing:
            return records
        if time.time() > deadline:
            raise VoloError(
                f"{len(missing)} shard(s) of {out} are still unfinished (e.g. shard {missing[0]}) after waiting "
                f"{timeout_s:.0f} s; rerun `volo label` with the same arguments to finish them."
            )
        time.sleep(2.0)


def report_dict(report: GenerateReport) -> dict:
    d = asdict(report)
    d["manifest"] = str(report.manifest) if report.manifest else None
    return d
