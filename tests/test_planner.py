"""Scaling planner: the communication model's arithmetic, and its check against the NVIDIA write-up's figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from volo.cli.main import main as volo_main
from volo.distributed.planner import (
    CommModel,
    Workload,
    calibrate,
    comm_from_probe,
    count_params,
    predict,
    read_bench_json,
    read_probe_json,
    single_gpu_from_node,
)
from volo.errors import VoloError

D5_PARAMS = 295_455_584


def test_count_params_on_meta_device():
    assert count_params("volo_d5") == D5_PARAMS
    with pytest.raises(VoloError, match="not a VOLO variant"):
        count_params("volo_d9")


def test_model_arithmetic_by_hand():
    comm = CommModel(nvlink_gbytes_s=100.0, inter_node_gbytes_s=10.0, overlap=0.5, backward_fraction=2 / 3)
    work = Workload(params=250_000_000, single_gpu_images_s=100.0, per_gpu_batch=50, epochs=10, dataset_images=100_000)
    one = predict(work, 1, 1, comm)
    assert (one.images_s, one.allreduce_s, one.efficiency) == (100.0, 0.0, 1.0)
    assert one.hours == pytest.approx(10 * 100_000 / 100 / 3600)
    two = predict(work, 2, 4, comm)  # n=8: 2*7/8 * 1e9 B / 10 GB/s = 0.175 s, half hidden
    assert two.allreduce_s == pytest.approx(0.175)
    assert two.exposed_comm_s == pytest.approx(0.0875)
    assert two.step_s == pytest.approx(0.5875)
    assert two.images_s == pytest.approx(8 * 50 / 0.5875)
    assert two.gpu_hours == pytest.approx(two.hours * 8)
    # Overlap is capped by the backward time: a tiny compute step cannot hide a long all-reduce.
    fast = predict(Workload(params=250_000_000, single_gpu_images_s=1e5, per_gpu_batch=50), 2, 4, comm)
    assert fast.exposed_comm_s == pytest.approx(0.175 - 2 / 3 * 50 / 1e5)


def test_defaults_reproduce_the_writeup():
    """VOLO-D5, 8 GPUs x 44 images per node: ~500 img/s on one DGX A100, ~2,100 img/s and ~52 h on five (84%)."""
    comm = CommModel()
    single = single_gpu_from_node(500.0, D5_PARAMS, 8, 44, comm)
    assert single == pytest.approx(62.90, abs=0.01)
    work = Workload(params=D5_PARAMS, single_gpu_images_s=single, per_gpu_batch=44, epochs=300)
    one, five = predict(work, 1, 8, comm), predict(work, 5, 8, comm)
    assert one.images_s == pytest.approx(500.0, rel=1e-9)
    assert five.images_s == pytest.approx(2100.0, rel=0.01)  # tolerance 1%
    assert five.images_s / (5 * one.images_s) == pytest.approx(0.84, abs=0.01)  # write-up's "84% scaling"
    assert five.hours == pytest.approx(52.0, rel=0.05)  # 50.9 h; tolerance 5%
    # The write-up's "~170 h on one node" does not follow from its own 500 img/s: 300 x 1,281,167 / 500 = 213.5 h.
    assert one.hours == pytest.approx(213.5, abs=0.1)
    implied = 300 * 1_281_167 / (170 * 3600)
    assert implied == pytest.approx(628, abs=1)  # 170 h would need ~628 img/s, 26% more than the stated 500


def test_calibration_gives_the_default_bandwidth():
    single, comm = calibrate(D5_PARAMS, 500.0, 2100.0, nodes=5)
    assert single == pytest.approx(62.90, abs=0.01)
    assert comm.inter_node_gbytes_s == pytest.approx(CommModel().inter_node_gbytes_s, rel=0.01)
    # With the wire speed of 8 x HDR (200 GB/s per node) instead, five nodes would scale at ~99%.
    work = Workload(params=D5_PARAMS, single_gpu_images_s=single)
    fast = predict(work, 5, 8, CommModel(inter_node_gbytes_s=180.0))
    assert math.isclose(fast.efficiency, 0.99, abs_tol=0.01)


def test_bench_json(tmp_path):
    path = tmp_path / "bench.json"
    rows = [
        {"model": "volo_d5", "impl": "timm", "batch": 64, "train_img_s": 60.0},
        {"model": "volo_d5", "impl": "ours", "batch": 64, "train_img_s": 70.5},
    ]
    path.write_text(json.dumps(rows))
    assert read_bench_json(path, "volo_d5") == (70.5, 64)
    with pytest.raises(VoloError, match="no row with model 'volo_d1'"):
        read_bench_json(path, "volo_d1")


def test_cli_table_json_and_plot(tmp_path, capsys):
    png = tmp_path / "plan.png"
    argv = ["plan", "--model", "volo_d5", "--node-images-s", "500", "--nodes", "1,5", "--plot", str(png)]
    assert volo_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("write-up preset: inter-node 8.3 GB/s (fitted to the write-up's own")
    assert lines[3].split()[:3] == ["1", "8", "500.0"]
    five = lines[4].split()
    assert five[:3] == ["5", "40", "2099.4"] and five[4] == "84.0%" and five[7] == "50.9"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert volo_main(["plan", "--params", "1000", "--images-s", "10", "--nodes", "1,2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["nodes"] for p in data["predictions"]["write-up preset"]] == [1, 2]
    assert volo_main(["plan", "--images-s", "10", "--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err


def test_latency_and_straggler_terms_by_hand():
    comm = CommModel(nvlink_gbytes_s=100.0, inter_node_gbytes_s=10.0, overlap=0.0, hop_latency_s=1e-4,
                     bucket_bytes=250_000_000, straggler_cv=0.1)  # fmt: skip
    work = Workload(params=250_000_000, single_gpu_images_s=100.0, per_gpu_batch=50)
    assert predict(work, 1, 1, comm).step_s == pytest.approx(0.5)  # one rank: neither term applies
    two = predict(
        work, 2, 4, comm
    )  # n=8: 4 buckets x 14 hops x 0.1 ms on top of 0.175 s; compute x (1 + 0.1 sqrt(2 ln 8))
    assert two.allreduce_s == pytest.approx(0.175 + 4 * 14 * 1e-4)
    assert two.compute_s == pytest.approx(0.5 * (1 + 0.1 * math.sqrt(2 * math.log(8))))
    assert two.step_s == pytest.approx(two.compute_s + two.allreduce_s)
    # the inversion from one node's images/s goes through the same model
    assert single_gpu_from_node(predict(work, 1, 8, comm).images_s, 250_000_000, 8, 50, comm) == pytest.approx(100.0)


def test_measured_mode_prints_both_tables(tmp_path, capsys):
    probe = {"world_size": 16, "nodes": 2, "backend": "nccl", "rows": [],
             "fit": {"latency_s": 3e-5, "busbw_gbs": 40.0}, "straggler_cv": 0.02}  # fmt: skip
    (tmp_path / "probe.json").write_text(json.dumps(probe))
    run = tmp_path / "run" / "metrics"
    run.mkdir(parents=True)
    rates = [100.0, 480.0, 500.0, 505.0, 495.0, 500.0]
    (run / "steps.jsonl").write_text(
        "".join(json.dumps({"step": i, "images_per_s": v}) + "\n" for i, v in enumerate(rates))
    )
    argv = ["plan", "--model", "volo_d5", "--from-run", str(tmp_path / "run"), "--probe-json",
            str(tmp_path / "probe.json"), "--nodes", "1,5"]  # fmt: skip
    assert volo_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("measured (16-rank probe on 2 node(s)): bus bandwidth 40.00 GB/s, latency 1.0 us")
    assert lines[3].split()[:3] == ["1", "8", "500.0"]  # the run's median of its second half
    assert lines[5].startswith("write-up preset")
    measured_five, preset_five = float(lines[4].split()[2]), float(lines[8].split()[2])
    assert preset_five == pytest.approx(2099.4, abs=0.1) and measured_five != preset_five
    comm = comm_from_probe(read_probe_json(tmp_path / "probe.json"))
    assert (comm.inter_node_gbytes_s, comm.straggler_cv) == (40.0, 0.02)
    assert comm.hop_latency_s == pytest.approx(3e-5 / 30)
    (tmp_path / "bad.json").write_text('{"fit": {}}')
    with pytest.raises(VoloError, match="not an all-reduce probe result"):
        read_probe_json(tmp_path / "bad.json")


def test_probe_runs_under_torchrun_with_gloo(tmp_path):
    """The built-in probe on 2 CPU ranks: every D1..D5 gradient size all-reduced, GB/s printed, a JSON for plan."""
    out = tmp_path / "probe.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "volo.distributed.allreduce_probe", "--scale", "0.0005", "--iters", "2", "--warmup", "1",
           "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all-reduce probe: 2 ranks on 1 node(s), gloo" in done.stdout and "busbw GB/s" in done.stdout
    result = json.loads(out.read_text())
    labels = [r["label"] for r in result["rows"]]
    assert labels[-5:] == [f"volo_d{i}_grads" for i in range(1, 6)]
    d5 = result["rows"][-1]
    assert d5["bytes"] == pytest.approx(D5_PARAMS * 4 * 0.0005, abs=8) and d5["busbw_gbs"] > 0
    assert result["fit"]["busbw_gbs"] > 0 and result["fit"]["latency_s"] >= 0 and result["straggler_cv"] >= 0
    comm = comm_from_probe(read_probe_json(out))  # a one-node probe measures the intra-node bandwidth
    assert comm.nvlink_gbytes_s == result["fit"]["busbw_gbs"] and comm.inter_node_gbytes_s == 8.3
