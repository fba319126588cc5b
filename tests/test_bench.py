"""The benchmarks run end to end on CPU at toy sizes and write their report; the timm twin is the same network."""

from __future__ import annotations

import re

import pytest
import torch

from volo.cli.bench import load_script
from volo.cli.main import main

pytest.importorskip("timm")


def test_timm_twin_has_our_weights_and_outputs():
    import volo

    bench = load_script("bench_model")
    torch.manual_seed(0)
    ours = volo.create_model("volo_tiny", img_size=32).eval()
    twin = bench.timm_twin(ours).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), twin(x), atol=1e-5, rtol=0)
    ours.train()
    twin.train()
    assert torch.allclose(bench.prediction(ours, x), bench.prediction(twin, x), atol=1e-5, rtol=0)


def test_volo_bench_cli_writes_a_report(tmp_path, capsys):
    out = tmp_path / "model.md"
    argv = ["bench", "--models", "volo_tiny", "--img-size", "32", "--batch", "2", "--steps", "2", "--warmup", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    for field in ("- device:", "- driver:", "- versions: torch", "timm", "- commit:", "- date:"):
        assert field in text
    rows = [line for line in text.splitlines() if line.startswith("| volo_tiny | 32 | 2 |")]
    assert [row.split("|")[4].strip() for row in rows] == ["ours", "timm"]
    gflops = {float(row.split("|")[-3]) for row in rows}
    assert len(gflops) == 1 and gflops.pop() > 0  # same network, same FLOP count
    assert "wrote" in capsys.readouterr().out
    # The JSON rows beside the report feed the scaling planner.
    assert main(["plan", "--model", "volo_tiny", "--bench-json", str(out.with_suffix(".json")), "--nodes", "1"]) == 0
    assert "images/s" in capsys.readouterr().out


def test_volo_bench_rejects_bad_size(capsys):
    assert main(["bench", "--models", "volo_tiny", "--img-size", "30", "--out", "/nonexistent/x.md"]) == 2
    assert re.search(r"--img-size 30 must be a multiple of 16", capsys.readouterr().err)


def test_saved_activation_bytes_counts_the_outlook_unfold():
    """The CPU memory measure: bytes autograd keeps; a bigger batch keeps proportionally more."""
    import volo

    bench = load_script("bench_model")
    cfg = bench.BenchConfig(plan=[], device="cpu")
    model = volo.create_model("volo_tiny", img_size=32).train()
    one = bench.saved_activation_bytes(model, torch.randn(1, 3, 32, 32), cfg)
    two = bench.saved_activation_bytes(model, torch.randn(2, 3, 32, 32), cfg)
    assert one > 0 and 1.9 < two / one < 2.1


def test_outlook_bench_cpu_rows(tmp_path):
    out = tmp_path / "outlook.md"
    load_script("bench_outlook").main(
        ["--device", "cpu", "--models", "volo_d1", "--batch", "1", "--steps", "1", "--out", str(out)]
    )
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith("| volo_d1 | 224 | 1 |")]
    assert sorted((r[5].strip(), r[6].strip()) for r in rows) == [
        ("module", "ours"),
        ("module", "timm"),
        ("op", "reference"),
    ]
    memory = {(r[5].strip(), r[6].strip()): float(r[9].replace(",", "")) for r in rows}
    assert memory[("module", "ours")] == memory[("module", "timm")]  # same saved tensors on the reference path


@pytest.mark.parametrize(
    "flags, compile_, mode",
    [([], False, None), (["--compile"], True, None), (["--compile-mode", "default"], True, None),
     (["--compile-mode", "reduce-overhead"], True, "reduce-overhead")],
)  # fmt: skip
def test_compile_mode_flag(flags, compile_, mode):
    cfg = load_script("bench_model").parse_args(["--models", "volo_tiny", "--device", "cpu", *flags])
    assert (cfg.compile, cfg.compile_mode) == (compile_, mode)


def test_ablate_outlook_adds_a_reference_op_row():
    from volo.models.outlook_attention import select_backend

    bench = load_script("bench_model")
    cfg = bench.parse_args(["--models", "volo_tiny", "--device", "cpu", "--ablate-outlook"])
    assert cfg.impls == ("ours", "ours-refop", "timm")
    v = torch.zeros(1, 4, 4, 8)
    with bench.outlook_op("ours-refop"):
        assert select_backend(v) == "reference"
    with bench.outlook_op("ours"):
        assert select_backend(v) == select_backend(v.clone())  # untouched: the automatic choice
    from volo.models import outlook_attention

    assert outlook_attention._FORCED is None
