"""benchmarks/gpu_check.py works on a fresh machine: run from a clean copy of the tree with a bare interpreter
(`python -I`: no PYTHONPATH, nothing installed but torch/timm), every stage reports `skipped: no CUDA` on CPU and one
archive per call is written; a stage cut by its timeout keeps the rows it wrote; the benchmarks write every row as
soon as it is measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from volo.cli.bench import load_script

REPO = Path(__file__).resolve().parents[1]


def _clean_copy(dest: Path) -> Path:
    """The files git would ship (tracked + untracked not ignored), copied: no caches, no venv, no build output."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.mark.timeout(1800)  # three calls, each importing torch and timm a few times: slow on a loaded machine
def test_every_call_runs_from_a_clean_copy_with_a_bare_interpreter(tmp_path):
    copy = _clean_copy(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    for call, names in (
        (1, ["tests"]),
        (2, ["outlook", "model"]),
        (3, ["compiled", "profile", "profile_eval", "targets"]),
    ):
        out = tmp_path / f"out{call}"
        done = subprocess.run(
            [sys.executable, "-I", "benchmarks/gpu_check.py", str(call), "--out", str(out)],
            cwd=copy, env=env, capture_output=True, text=True, timeout=580,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        archive = out / f"gpu_check_{call}.tar.gz"
        members = _members(archive)
        summary = json.loads(members[f"gpu_check_{call}_logs/summary.json"])
        assert [s["stage"] for s in summary["stages"]] == names
        assert all(s["outcome"] == "skipped: no CUDA" for s in summary["stages"]), summary["stages"]
        environment = summary["environment"]
        assert Path(environment["volo_from"]).resolve().is_relative_to(copy.resolve())  # imports the tree it is in
        assert environment["card"] == "no CUDA" and environment["torch"] and environment["date"]
        assert any(name.startswith("results/") for name in members)  # the reports travel in the archive
        assert f"== {names[-1]}: skipped: no CUDA" in done.stdout


def test_a_stage_cut_by_its_timeout_keeps_its_finished_rows(tmp_path, monkeypatch):
    """A real child process, really killed by the stage timeout (SIGINT to its process group), after writing one
    row and while it would still run for 1000 s: the row is kept and goes into the archive."""
    gpu_check = load_script("gpu_check")
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(gpu_check, "RESULTS", results)
    logs = tmp_path / "logs"
    logs.mkdir()
    report = results / "model_h200.md"
    script = f"echo '| volo_d1 | 224 | 128 | ours |' > {report}; echo measured; exec sleep 1000"
    stage = gpu_check.Stage("model", 3, ["-c", script])
    result = gpu_check.run_stage(stage, logs, interpreter="/bin/sh")
    assert result["outcome"].startswith("timed out after 3 s") and result["seconds"] < 60
    assert (logs / "model.log").read_text().strip() == "measured"
    gpu_check.write_archive(tmp_path / "check.tar.gz", logs, {"stages": [result]})
    members = _members(tmp_path / "check.tar.gz")
    assert members["results/model_h200.md"].decode().startswith("| volo_d1 | 224 | 128 | ours |")
    assert json.loads(members["logs/summary.json"])["stages"][0]["outcome"] == result["outcome"]


def test_bench_model_writes_each_pair_as_it_is_measured(tmp_path, monkeypatch):
    """The second model of the plan never finishes (interrupted): the first one's rows are already on disk."""
    bench = load_script("bench_model")

    def fake_pair(name, img_size, batch, cfg, peak):
        if name == "volo_d2":
            raise KeyboardInterrupt  # what the stage timeout's SIGINT raises
        return [bench.BenchRow(impl, name, img_size, batch, 10.0, 100.0, 300.0, 1.0, 2.0) for impl in ("ours", "timm")]

    monkeypatch.setattr(bench, "bench_pair", fake_pair)
    out = tmp_path / "model.md"
    cfg = bench.BenchConfig(plan=[("volo_d1", 224, 8), ("volo_d2", 224, 8)], device="cpu", out=out)
    with pytest.raises(KeyboardInterrupt):
        bench.run(cfg)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| volo_")]
    assert [r.split("|")[1].strip() + "/" + r.split("|")[4].strip() for r in rows] == ["volo_d1/ours", "volo_d1/timm"]
    assert [r["model"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]] == ["volo_d1"] * 2


def test_gpu_tests_named_by_the_check_exist():
    """Call 1's trimmed test list names real tests (a renamed test would otherwise silently run nothing)."""
    gpu_check = load_script("gpu_check")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *gpu_check.GPU_TESTS],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = int(done.stdout.rsplit(" tests collected", 1)[0].split()[-1])
    assert collected >= len(gpu_check.GPU_TESTS) and "not found" not in done.stdout + done.stderr
