"""Training-loader throughput per backend on this machine: images/s delivered as `Batch`es, augmentation included.

Rows: the PyTorch loader (PIL transforms in N DataLoader workers), DALI on the CPU (`device_id=None`), nvJPEG on
the CPU and, where CUDA is present, DALI "mixed" (GPU decode) and nvJPEG on the GPU. Every row uses the training
augmentation (random resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, normalise) at 224 px. On a GPU it also
times VOLO-D1 training steps (bf16 autocast, AdamW) so the data rate can be read against what the model consumes:
a loader slower than the model's images/s is the bottleneck (VOLO-D1 needs roughly 5,000 images/s per 8-GPU node
class machine, i.e. ~600+ per H100/A100).

    python benchmarks/bench_loaders.py                      # imagenette2-224 if present, else generated JPEGs
    python benchmarks/bench_loaders.py --data /path/train --images 2048 --batch 128 --workers 8

Writes `benchmarks/results/loaders_<cpu|gpu>.md` with machine, versions, commit and date.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision
from bench_env import IMAGENETTE, RESULTS_DIR, describe_environment, write_report
from bench_model import BenchConfig, bench_pair

from volo.data.backends import LoaderOptions, build_train_loader
from volo.data.synthetic import make_synthetic_dataset


@dataclass
class Row:
    backend: str
    device: str
    workers: int
    images_per_s: float
    note: str = ""


def time_loader(backend: str, opts: LoaderOptions, batches: int) -> float:
    """Images/s over `batches` batches after one warm-up batch (pipeline build and worker start excluded)."""
    loader = build_train_loader(replace(opts, backend=backend))
    batches = min(batches, len(loader) - 1)
    it = iter(loader)
    first = next(it)
    if first.images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        batch = next(it)
        seen += len(batch)
    if batch.images.is_cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def model_images_per_s(batch: int = 128) -> float:
    """VOLO-D1 @224 training steps (bf16 autocast, fused AdamW) on the GPU, as bench_model.py times them: the rate
    the loader must keep up with."""
    cfg = BenchConfig(plan=[], amp=True, device="cuda", impls=("ours",))
    return bench_pair("volo_d1", 224, batch, cfg, None)[0].train_img_s


def loader_versions() -> str:
    try:
        import nvidia.dali

        dali = f"DALI {nvidia.dali.__version__}"
    except ImportError:
        dali = "DALI not installed"
    return f"torchvision {torchvision.__version__}, {dali}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="ImageFolder training split (default: imagenette)")
    parser.add_argument("--images", type=int, default=256, help="images to use (spread over the classes)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per row")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="PyTorch worker counts to try")
    parser.add_argument("--threads", type=int, default=2, help="DALI / nvJPEG threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or (IMAGENETTE if IMAGENETTE.is_dir() else None)
        if data is None:  # generated JPEGs of photo-like size
            data = Path(tmp)
            make_synthetic_dataset(data, classes=2, per_class=max(1, args.images // 2), size=320, seed=0)
        source = "imagenette2-224 (short side 224)" if data == IMAGENETTE else str(data)
        base = dict(root=data, img_size=224, batch_size=args.batch, max_images=args.images, seed=0)
        plan: list[tuple[str, str | None, int]] = [("pytorch", None, w) for w in args.workers]
        plan += [("dali", None, args.threads), ("nvjpeg", None, args.threads)]
        if torch.cuda.is_available():
            plan += [("dali", "cuda", args.threads), ("nvjpeg", "cuda", args.threads)]
        rows = []
        for backend, device, workers in plan:
            opts = LoaderOptions(**base, device=device, workers=workers)
            try:
                rate = time_loader(backend, opts, args.batches)
                rows.append(Row(backend, device or "cpu", workers, rate))
            except Exception as err:  # a missing optional backend is a row, not a crash
                last = str(err).strip().splitlines()[-1] if str(err).strip() else ""
                rows.append(
                    Row(backend, device or "cpu", workers, float("nan"), f"failed: {type(err).__name__}: {last}")
                )
            row = rows[-1]
            print(f"{backend:8s} {row.device:5s} workers={workers}: {row.images_per_s:8.1f} img/s {row.note}")
        model_rate = model_images_per_s() if torch.cuda.is_available() else None

    env = describe_environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    out = args.out or RESULTS_DIR / f"loaders_{'gpu' if torch.cuda.is_available() else 'cpu'}.md"
    settings = (
        f"{source}, {args.images} images, batch {args.batch}, 224 px, RandAugment rand-m9-mstd0.5-inc1, "
        f"{args.batches} timed batches after one warm-up batch; {loader_versions()}; 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end (compare rows of one run, not across runs)"
    )
    lines = ["| backend | device | workers/threads | images/s | note |", "|---|---|---|---|---|"]
    lines += [f"| {r.backend} | {r.device} | {r.workers} | {r.images_per_s:.1f} | {r.note} |" for r in rows]
    if model_rate is not None:
        note = (
            f"VOLO-D1 @224 training (bf16, batch 128) on this GPU: {model_rate:.0f} images/s. A loader row below "
            "that rate would starve the GPU (an 8-GPU node needs about 8x, ~5,000 images/s)."
        )
    else:
        note = (
            "No GPU here: the GPU rows (DALI mixed, nvJPEG on CUDA) and the VOLO-D1 training rate they must beat "
            "(~5,000 images/s per 8-GPU node) come from running this script on a GPU machine."
        )
    write_report(out, "Loader throughput", env, settings, "\n".join(lines) + "\n\n" + note)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
