"""volo: train VOLO vision transformers with token labeling, from one CPU to a Slurm cluster of GPUs.

The public API is timm's: `create_model`, `list_models`, `resolve_data_config`, `create_transform`. Names are
imported on first use, so `import volo` (and `volo --help`) does not import torch.
"""

from __future__ import annotations

import importlib

from volo.errors import VoloError

__version__ = "0.1.0"

_LAZY = {
    "Volo": "volo.models.volo",
    "VoloTrainOutput": "volo.models.volo",
    "VoloFeatures": "volo.models.features",
    "create_model": "volo.models.registry",
    "list_models": "volo.models.registry",
    "load_weights": "volo.models.weights",
    "save_weights": "volo.models.weights",
    "resolve_data_config": "volo.data.data_config",
    "create_transform": "volo.data.data_config",
}
__all__ = ["VoloError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'volo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
