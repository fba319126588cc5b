"""Scaling planner: the communication model's arithmetic, and its check against the NVIDIA write-up's figures."""

from __future__ import annotations

import json
import math

import pytest

from volo.cli.main import main as volo_main
from volo.distributed.planner import (
    CommModel,
    Workload,
    calibrate,
    count_params,
    predict,
    read_bench_json,
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
    assert lines[2].split()[:3] == ["1", "8", "500.0"]
    five = lines[3].split()
    assert five[:3] == ["5", "40", "2099.4"] and five[4] == "84.0%" and five[7] == "50.9"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert volo_main(["plan", "--params", "1000", "--images-s", "10", "--nodes", "1,2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["nodes"] for p in data["predictions"]] == [1, 2]
    assert volo_main(["plan", "--images-s", "10", "--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err
