"""Process-wide backend settings for a training run, restored when the run ends.

- `torch.backends.cudnn.benchmark`: on (the stem's convolutions see one input shape, so cuDNN's autotuner picks the
  fastest algorithm once), off for deterministic runs;
- TF32 for float32 matmuls and convolutions on Ampere and newer (what timm's train.py sets): only the parts that run
  in float32 (amp=none, or outside autocast) are affected; bf16/fp16 autocast regions are not;
- deterministic algorithms when `train.deterministic` (a resumed run repeats the losses exactly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def speed_settings(deterministic: bool) -> Iterator[None]:
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.use_deterministic_algorithms(deterministic or saved[0])
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
        torch.backends.cuda.matmul.allow_tf32 = saved[2]
        torch.backends.cudnn.allow_tf32 = saved[3]
