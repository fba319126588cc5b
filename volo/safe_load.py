"""`torch.load` that never runs code (weights_only=True) and explains a refusal in one line.

torch's own refusal is a paragraph that advises re-running with weights_only=False; we name the pickled global
that was refused instead (e.g. `posix.system`, `__main__.Payload`) and never relay that advice.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from volo.errors import VoloError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_failure(err: BaseException) -> str:
    """One line saying why torch.load(weights_only=True) failed, without torch's weights_only=False advice."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        return (
            f"it holds the pickled object {found.group(1)}, which is not a tensor or plain data; refused because "
            "unpickling it could run code"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    noise = ("weights_only", "Weights only", "torch.load", "trust")  # torch's advice, never relayed
    lines = [line for line in lines if not any(n in line for n in noise)] or ["no detail"]
    return f"{type(err).__name__}: {lines[0].removeprefix('WeightsUnpickler error: ')}"[:200]


def safe_torch_load(path: str | Path, hint: str) -> object:
    """`torch.load(path, weights_only=True)` on the CPU; VoloError "<path> cannot be read (<why>); <hint>"."""
    try:
        with warnings.catch_warnings():  # "pickle protocol 4" notices from older torch.save files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the file is unusable
        raise VoloError(f"{path} cannot be read ({load_failure(err)}); {hint}") from None
