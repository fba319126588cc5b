"""Shared test settings: CPU by default, small thread counts (CI has 2 cores), GPU tests skip without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette2-224"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def imagenette() -> Path:
    """The real-photo folder beside the project; tests that use it skip where it is absent."""
    if not IMAGENETTE.is_dir():
        pytest.skip("../shared/data/imagenette2-224 is not present")
    return IMAGENETTE


@pytest.fixture
def tiny_run(tmp_path):
    """`tiny_run(name, *overrides, px=40, per_class=4, img_size=32)`: a short `debug`-recipe config over a generated
    4-class ImageFolder in tmp_path (made once per fixture), logging every step, its run folder runs/<name>."""
    from volo.data.synthetic import make_synthetic_dataset
    from volo.training.config import load_config

    data = tmp_path / "data"

    def build(name: str, *overrides: str, px: int = 40, per_class: int = 4, img_size: int = 32):
        if not data.is_dir():
            make_synthetic_dataset(data / "train", classes=4, per_class=per_class, size=px, seed=0)
            make_synthetic_dataset(data / "val", classes=4, per_class=max(1, per_class // 4), size=px, seed=1)
        base = [
            "model.num_classes=4", f"model.img_size={img_size}", "token_labels.size=null", f"data.path={data}",
            f"checkpoint.output_dir={tmp_path / 'runs'}", f"checkpoint.run_name={name}", "train.batch_size=4",
            "train.log_every=1", "train.progress=false",
        ]  # fmt: skip
        return load_config("debug", [*base, *overrides])

    return build


def step_losses(run_dir: Path) -> list[float]:
    """The logged loss of every step row of a finished run."""
    import json

    rows = (run_dir / "metrics" / "steps.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in rows]
