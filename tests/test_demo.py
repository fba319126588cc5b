"""`volo demo` at its test size: every stage of the pipeline runs, in order, and reports real numbers."""

from __future__ import annotations

import json
from pathlib import Path

from volo.cli.main import main


def test_demo_small_runs_every_stage(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "small", "--out", str(out), "--teacher-size", "64", "--high-res", "80"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["data", "teacher", "label", "baseline", "student", "finetune", "eval"]
    for stage in ("teacher", "baseline", "student", "finetune"):
        assert 0.0 <= summary[stage]["top1"] <= 100.0
    # The token-label store was written and used by the student and the fine-tune.
    assert (out / "labels" / "manifest.json").is_file()
    for run in ("student_tl", "student_tl_finetune"):
        config = (out / "runs" / run / "config.yaml").read_text()
        assert f"label_root: {out / 'labels'}" in config
    # The fine-tune ran at the higher resolution, from the student's weights.
    weights_meta = json.loads((out / "runs" / "student_tl_finetune" / "weights" / "final.json").read_text())
    assert weights_meta["arch"]["img_size"] == 80
    printed = capsys.readouterr().out
    assert "with token labels:" in printed and "plots:" in printed
    assert (out / "runs" / "student_tl" / "plots" / "loss.png").is_file()
