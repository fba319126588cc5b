"""Golden losses (as torchtitan keeps loss curves): the fixed-seed tiny run of tests/golden_run.py must log the
losses, gradient norms and learning rates stored in tests/assets/golden_losses.json.

Tolerance: relative 1e-4 on the losses and gradient norms (one CPU thread; 1 vs 2 threads differ by ~1e-6 on the
development machine, so 1e-4 leaves room for other CPUs while any change to the loop's arithmetic shows), 1e-12 on
the learning rates (pure arithmetic). A change meant to alter the numbers regenerates the file with
`python tests/golden_run.py --update`, and says so in its commit message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RTOL = 1e-4


@pytest.mark.timeout(300)
def test_tiny_run_reproduces_the_golden_losses(tmp_path):
    golden = json.loads((HERE / "assets" / "golden_losses.json").read_text())
    out = tmp_path / "got.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden_run.py"), str(out)], env=env, capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["step"] == golden["step"] == [1, 2, 3, 4, 5, 6]
    assert got["lr"] == pytest.approx(golden["lr"], rel=1e-12)
    for field in ("loss", "cls_loss", "token_loss", "grad_norm"):
        assert got[field] == pytest.approx(golden[field], rel=RTOL), (
            f"{field} left the golden curve: {got[field]} vs {golden[field]}; if the change is intended, "
            "regenerate with `python tests/golden_run.py --update`"
        )
