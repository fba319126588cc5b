"""The one way to a training loader: `build_train_loader(spec)`, `spec.backend` pytorch | dali | nvjpeg.

The spec, the loader interface and the image scan are in `volo.data.loader_spec`, the geometry every backend
reports its augmentation with in `volo.data.affine`; the loaders are `torch_loader.py`, `dali_loader.py` and
`nvjpeg_loader.py`. This module only picks one (and imports them, never the other way round).
"""

from __future__ import annotations

from volo.data.loader_spec import BACKENDS, BatchLoader, LoaderOptions
from volo.errors import VoloError

__all__ = ["BACKENDS", "BatchLoader", "LoaderOptions", "build_train_loader"]


def build_train_loader(spec: LoaderOptions) -> BatchLoader:
    """The training loader `spec.backend` names; all yield `Batch` with one contract and one resume interface."""
    if spec.backend == "dali":
        from volo.data.dali_loader import DaliLoader  # DALI is optional: imported only when asked for

        return DaliLoader(spec)
    if spec.backend == "nvjpeg":
        from volo.data.nvjpeg_loader import NvJpegLoader

        return NvJpegLoader(spec)
    if spec.backend == "pytorch":
        from volo.data.torch_loader import TorchLoader

        return TorchLoader(spec)
    raise VoloError(f"Unknown data loader backend {spec.backend!r}; choose one of {', '.join(BACKENDS)}.")
