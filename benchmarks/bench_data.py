"""CPU data-path throughput with token labels vs plain augmentation, and the per-batch cost of target building.

    python benchmarks/bench_data.py [--data DIR] [--images 256] [--workers 2] [--batch-size 32] [--out FILE.md]

Same images, same worker count, same TrainTransform (RandomResizedCrop + flip + RandAugment + erasing) for both
loaders; the token-label loader also reads a sharded store (top-5, 18 x 18 maps, 1000 classes, like the released
NFNet-F6 labels; values random, written once into a temporary folder) and carries the maps in every Batch.
Target construction (`build_targets`: scatter to (B, 1000, 18, 18), affine sampling with 2x2 points per token,
softmax, smoothing) is timed on --device (cpu here; cuda where present), against plain one-hot targets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from bench_env import IMAGENETTE, describe_environment, write_report

from volo.data.batch import Batch
from volo.data.dataset import ImageFolderDataset
from volo.data.loader import LoaderConfig, build_loader
from volo.data.synthetic import make_synthetic_dataset
from volo.data.targets import build_targets
from volo.data.transforms import TrainTransform, TrainTransformConfig
from volo.labeling.store import ShardedLabelStore, StoreMeta, write_manifest, write_shard


def subset_folder(src: Path, dst: Path, n: int) -> Path:
    """Symlink n images spread over src's classes into dst (no copies)."""
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    pick = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
    for f in pick:
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dst / f.parent.name / f.name).symlink_to(f)
    return dst


def fake_store(dataset: ImageFolderDataset, out: Path, k: int = 5, hw: int = 18, classes: int = 1000) -> Path:
    rng = np.random.default_rng(0)
    keys = [e.key for e in dataset.entries]
    values = rng.normal(0, 3, (len(keys), k, hw, hw)).astype(np.float16)
    base = rng.integers(0, classes, (len(keys), 1, hw, hw))
    ids = ((base + 7 * np.arange(k)[None, :, None, None]) % classes).astype(np.int16)  # k distinct ids per cell
    rec = write_shard(out, 0, keys, values, ids, [])
    write_manifest(out, StoreMeta(classes, k, (hw, hw), "random (benchmark)", 576), [rec])
    return out


def loader_rate(dataset: ImageFolderDataset, cfg: LoaderConfig) -> float:
    """Images/s over one pass, after the first batch (worker start-up excluded)."""
    loader = build_loader(dataset, cfg, shuffle=True)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch)
    return n / (time.perf_counter() - start)


def target_cost(batch: Batch, device: torch.device, reps: int, method: str = "sparse") -> float:
    """Mean seconds of build_targets on `device` for `batch`."""
    b = batch.to(device)
    build_targets(b, 1000, method=method)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        build_targets(b, 1000, method=method)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="ImageFolder (default: imagenette train if present, else synthetic)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="interleaved loader passes; the best of each is kept")
    p.add_argument("--out", type=Path, help="write a markdown report here")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    src = args.data or (IMAGENETTE if IMAGENETTE.is_dir() else None)
    if src is None:
        root = make_synthetic_dataset(tmp / "syn", classes=10, per_class=args.images // 10, size=300).root
        source = "synthetic JPEGs (~300 px)"
    else:
        root = subset_folder(src, tmp / "subset", args.images)
        source = f"{src} ({args.images} images)"
    transform = TrainTransform(TrainTransformConfig(img_size=args.img_size))
    plain = ImageFolderDataset(root, transform)
    store = ShardedLabelStore(fake_store(plain, tmp / "store"))
    labelled = ImageFolderDataset(root, transform, labels=store)
    cfg = LoaderConfig(batch_size=args.batch_size, num_workers=args.workers, drop_last=False)

    torch.manual_seed(0)
    rates = [(loader_rate(plain, cfg), loader_rate(labelled, cfg)) for _ in range(args.rounds)]  # interleaved
    rate_plain, rate_tl = max(r[0] for r in rates), max(r[1] for r in rates)
    batch = next(iter(build_loader(labelled, cfg, shuffle=True)))
    device = torch.device(args.device)
    cost_tl = target_cost(batch, device, args.reps)
    cost_dense = target_cost(batch, device, max(1, args.reps // 2), method="dense")
    plain_batch = Batch(batch.images, batch.labels, batch.label_transform)
    cost_plain = target_cost(plain_batch, device, args.reps)

    env = describe_environment(device)
    settings = (
        f"{torch.get_num_threads()} torch threads, device for targets: {device}; torchvision "
        f"{torchvision.__version__}, pillow {PIL.__version__}; data: {source}; {args.img_size} px output, batch "
        f"{args.batch_size}, {args.workers} workers; TrainTransform = RandomResizedCrop + flip + "
        "rand-m9-mstd0.5-inc1 + erasing 0.25; token labels: sharded store, top-5 x 18 x 18 fp16 maps, 1000 classes"
    )
    lines = [
        "| measurement | plain | token labels | ratio |",
        "|---|---|---|---|",
        f"| loader images/s (best of {args.rounds} interleaved passes) | {rate_plain:.1f} | {rate_tl:.1f} "
        f"| {rate_tl / rate_plain:.2f} |",
        f"| build_targets per batch of {len(batch)} ({device}) | {cost_plain * 1e3:.2f} ms | {cost_tl * 1e3:.2f} ms "
        f"| {cost_tl / cost_plain:.1f} |",
        f"| build_targets, dense reference path (grid_sample on (B, 1000, 18, 18)) | | {cost_dense * 1e3:.2f} ms | "
        f"{cost_dense / cost_tl:.1f}x the fast path |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        write_report(args.out, "Data path: token labels vs plain augmentation", env, settings, table)


if __name__ == "__main__":
    main()
