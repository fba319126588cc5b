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
import datetime
import os
import platform
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from volo.data.backends import LoaderOptions, build_loader

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2-224" / "train"


@dataclass
class Row:
    backend: str
    device: str
    workers: int
    images_per_s: float
    note: str = ""


def generated_dataset(root: Path, images: int) -> Path:
    """Photo-sized random JPEGs (smooth noise, ~300x400), two classes."""
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(280, 340)), int(rng.integers(360, 440))
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def time_loader(backend: str, opts: LoaderOptions, batches: int) -> float:
    """Images/s over `batches` batches after one warm-up batch (pipeline build and worker start excluded)."""
    loader = build_loader(backend, opts)
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


def model_images_per_s(batch: int = 128, steps: int = 10) -> float:
    """VOLO-D1 @224 training steps (bf16 autocast, AdamW) on the GPU: the rate the loader must keep up with."""
    import volo

    model = volo.create_model("volo_d1").cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")
    box = torch.tensor([0, 0, 0, 0], device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x, mix_box=box)
            loss = torch.nn.functional.cross_entropy(out.cls_logits, y) + out.token_logits.float().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def versions() -> str:
    parts = [f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"]
    try:
        import nvidia.dali

        parts.append(f"DALI {nvidia.dali.__version__}")
    except ImportError:
        parts.append("DALI not installed")
    return ", ".join(parts)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="ImageFolder training split (default: imagenette)")
    parser.add_argument("--images", type=int, default=256, help="images to use (first N of the scan)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per row")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="PyTorch worker counts to try")
    parser.add_argument("--threads", type=int, default=2, help="DALI / nvJPEG threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or (IMAGENETTE if IMAGENETTE.is_dir() else generated_dataset(Path(tmp), args.images))
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

    kind = "gpu" if torch.cuda.is_available() else "cpu"
    out = args.out or RESULTS_DIR / f"loaders_{kind}.md"
    lines = [
        f"# Loader throughput ({kind})",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {machine()}",
        f"- versions: {versions()}",
        f"- commit: {commit()}",
        f"- data: {source}, {args.images} images, batch {args.batch}, 224 px, RandAugment rand-m9-mstd0.5-inc1, "
        f"{args.batches} timed batches after one warm-up batch",
        f"- load: 1-minute load average {os.getloadavg()[0]:.1f} at the end (other processes skew the rates when it "
        "exceeds the core count; compare rows of one run, not across runs)",
        "",
        "| backend | device | workers/threads | images/s | note |",
        "|---|---|---|---|---|",
    ]
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
    lines += ["", note]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
