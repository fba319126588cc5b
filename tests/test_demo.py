"""`volo demo` at its test size: every stage of the pipeline runs, in order, and reports real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from volo.cli.main import main

pytest.importorskip("timm")  # the demo's teacher is a timm CNN


def test_demo_small_runs_every_stage(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "small", "--out", str(out), "--teacher-size", "64", "--high-res", "80"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [k for k in summary if k not in ("teacher_quality", "val_images")] == [
        "data",
        "teacher",
        "label",
        "baseline",
        "student",
        "finetune",
    ]
    for stage in ("teacher", "baseline", "student", "finetune"):
        assert 0.0 <= summary[stage]["top1"] <= 100.0
    # two seeds per arm at the test size (three by default), mean and spread over them
    for arm in ("baseline", "student"):
        runs = summary[arm]["top1_runs"]
        assert len(runs) == 2 and summary[arm]["top1"] == pytest.approx(sum(runs) / 2)
        assert summary[arm]["top1_sd"] >= 0.0
    assert summary["val_images"] == 24
    quality = summary["teacher_quality"]
    assert quality["images"] == 48 and 0.0 <= quality["varying_maps_pct"] <= 100.0
    # the teacher is a timm CNN trained by volo train; its token-label store was used by the students and fine-tune
    teacher_meta = json.loads((out / "runs" / "teacher" / "weights" / "final.json").read_text())
    assert teacher_meta["arch"]["timm"] == "test_resnet"
    assert (out / "labels" / "manifest.json").is_file()
    for run in ("student_tl_s0", "student_tl_s1", "student_tl_finetune"):
        config = (out / "runs" / run / "config.yaml").read_text()
        assert f"label_root: {out / 'labels'}" in config
    assert "seed: 1" in (out / "runs" / "student_plain_s1" / "config.yaml").read_text()
    # The fine-tune ran at the higher resolution, from the first student's weights.
    weights_meta = json.loads((out / "runs" / "student_tl_finetune" / "weights" / "final.json").read_text())
    assert weights_meta["arch"]["img_size"] == 80
    printed = capsys.readouterr().out
    assert "with token labels:" in printed and "+-" in printed and "plots:" in printed
    assert (out / "runs" / "student_tl_s0" / "plots" / "loss.png").is_file()
