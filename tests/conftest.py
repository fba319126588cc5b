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
