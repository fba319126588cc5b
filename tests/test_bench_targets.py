"""benchmarks/targets.py fills issue 6's table from the reports: right rows, right verdicts, "not measured" for a
missing report, the compiled D1 report only from the same card."""

import json

from volo.cli.bench import load_script


def _row(impl, model, size, batch, train, eval_, mem):
    return {"impl": impl, "model": model, "img_size": size, "batch": batch, "train_img_s": train,
            "eval_img_s": eval_, "mem_mib": mem, "fwd_bwd_ms": 1e3 * batch / train, "fwd_bwd_cpu_ms": None}  # fmt: skip


def _write(path, slug, rows, **extra):
    env = {"device": f"NVIDIA {slug.upper()}", "slug": slug, "date": "d", "commit": "c"}
    path.write_text(json.dumps({"environment": env, "rows": rows, **extra}))


def _verdicts(text):
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return {r[1].strip(): (r[4].strip(), r[5].strip()) for r in rows[1:]}


def test_gpu_targets_and_verdicts(tmp_path):
    targets = load_script("targets")
    _write(tmp_path / "model_h200.json", "h200", [
        _row("ours", "volo_d1", 224, 128, 4900.0, 12500.0, 30000.0),
        _row("ours-refop", "volo_d1", 224, 128, 3500.0, 9000.0, 41000.0),
        _row("timm", "volo_d1", 224, 128, 1317.0, 4088.0, 45000.0),
        _row("ours", "volo_d5", 224, 64, 720.0, 2000.0, 50000.0),
        _row("timm", "volo_d5", 224, 64, 280.0, 900.0, 60000.0),
    ])  # fmt: skip
    _write(tmp_path / "model_gpu_compiled_d1.json", "h200", [
        _row("ours", "volo_d1", 224, 128, 5200.0, 11000.0, 20000.0),
        _row("timm", "volo_d1", 224, 128, 2600.0, 8000.0, 40000.0),
    ])  # fmt: skip
    outlook_rows = [
        {"model": "volo_d1", "level": "op", "impl": "reference", "fwd_bwd_ms": 3.0, "mem_mib": 100.0},
        {"model": "volo_d1", "level": "op", "impl": "triton", "fwd_bwd_ms": 0.9, "mem_mib": 40.0},
    ]
    _write(tmp_path / "outlook_h200.json", "h200", outlook_rows)
    out = targets.main(["--results", str(tmp_path)])  # the newest GPU slug: h200
    assert out.name == "targets_h200.md"
    v = _verdicts(out.read_text())
    assert v["VOLO-D1 train images/s @224, batch 128"] == ("5,200", "yes")  # the compiled row counts
    assert v["VOLO-D5 train images/s @224, batch 64"] == ("720", "yes")
    assert v["VOLO-D5 train images/s @448, batch 16"] == ("not measured", "not measured")
    assert v["VOLO-D1 eval images/s @224"] == ("12,500", "yes")
    assert v["outlook attention fwd+bwd, D1 stage-1 shape"] == ("3.33x faster, 0.40x memory", "yes")
    assert v["peak training memory, same batch"][1] == "yes"
    assert "| volo_d1 | 224 | 128 | 4,900 | 3,500 | 1.40x | 30,000 / 41,000 |" in out.read_text()

    # another card's compiled run is not used; a slower op misses its target
    _write(tmp_path / "model_gpu_compiled_d1.json", "h100", [_row("ours", "volo_d1", 224, 128, 5200.0, 1.0, 1.0)])
    outlook_rows[1]["fwd_bwd_ms"] = 1.5
    _write(tmp_path / "outlook_h200.json", "h200", outlook_rows)
    v = _verdicts(targets.main(["--results", str(tmp_path), "--slug", "h200"]).read_text())
    assert v["VOLO-D1 train images/s @224, batch 128"] == ("4,900", "**no**")
    assert v["outlook attention fwd+bwd, D1 stage-1 shape"] == ("2.00x faster, 0.40x memory", "**no**")


def test_cpu_targets_from_a_cpu_report(tmp_path):
    targets = load_script("targets")
    rows = [
        _row("ours", "volo_tiny", 224, 8, 109.0, 395.0, 69.7),
        _row("timm", "volo_tiny", 224, 8, 97.0, 325.0, 69.8),
        _row("ours", "volo_d1", 224, 4, 3.8, 13.0, 446.8),
        _row("timm", "volo_d1", 224, 4, 3.9, 13.0, 446.8),
    ]
    _write(tmp_path / "model_cpu.json", "cpu", rows)
    v = _verdicts(targets.main(["--results", str(tmp_path)]).read_text())
    assert v["CPU volo_tiny train step images/s (with AdamW) @224, batch 8"] == ("109.0", "yes")
    assert v["CPU volo_d1 train step images/s (with AdamW) @224, batch 4"] == ("3.8", "**no**")
    assert v["CPU volo_tiny fwd+bwd ms @224, batch 8 (fwd_bwd_ms)"][1] == "yes"
