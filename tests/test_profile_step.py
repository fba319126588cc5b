"""The step profiler runs end to end on CPU at a toy size; its categories cover every op and add up to the total."""

from __future__ import annotations

import pytest

from volo.cli.bench import load_script

pytest.importorskip("timm")


def _table_rows(text: str, first_cells: list[str]) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in first_cells:
            rows[cells[0]] = cells[1:]
    return rows


def _number(cell: str) -> float:
    """A report figure as printed (`1,632.32`, `12.5`) -> float."""
    return float(cell.replace(",", ""))


def _check_table(text: str, categories: list[str]) -> None:
    """The printed category table: every category, parts summing to the total, percentages to 100."""
    rows = _table_rows(text, [*categories, "total"])
    assert set(rows) == {*categories, "total"}
    for ms_col, pct_col in ((0, 1), (2, 3)):  # ours, timm
        total = _number(rows["total"][ms_col])
        parts = [_number(rows[c][ms_col]) for c in categories]
        assert total > 0 and abs(sum(parts) - total) <= 0.01 * total
        assert abs(sum(_number(rows[c][pct_col]) for c in categories) - 100) < 1


def test_profile_report_categories_sum_to_total(tmp_path):
    profile_step = load_script("profile_step")
    out = tmp_path / "profile.md"
    argv = ["--device", "cpu", "--models", "volo_tiny", "--batch", "1", "--img-size", "64", "--steps", "1"]
    results, path = profile_step.run(profile_step.config_from_args([*argv, "--warmup", "0", "--out", str(out)]))
    assert path == out
    text = out.read_text()
    for field in ("- device:", "- driver:", "- versions: torch", "timm", "- commit:", "- date:", "torch threads"):
        assert field in text
    assert "## volo_tiny, batch 1, 64x64" in text
    _check_table(text, profile_step.CATEGORIES)
    # the step's main parts were all seen, in both implementations (from the measured numbers, not the text)
    for profile in results["volo_tiny"]:
        by_category = profile.by_category()
        assert sum(by_category.values()) == pytest.approx(profile.total_ms) and profile.total_ms > 0
        for category in ("outlook attention", "matmul / linear", "convolution (stem)", "layer norm", "optimizer"):
            assert by_category[category] > 0, (profile.impl, category)
    assert text.count("Top 15 ops, ") == 2


def test_report_figures_above_a_thousand_parse():
    """A slow machine prints `1,632.32`: the table stays consistent whatever the magnitudes (no timing involved)."""
    profile_step = load_script("profile_step")

    def fake(impl: str, scale: float):
        ms = {(f"op{i}", c): scale * (i + 1) for i, c in enumerate(profile_step.CATEGORIES)}
        return profile_step.StepProfile(impl, 1.2 * sum(ms.values()), None, 1.3 * sum(ms.values()), ms,
                                        dict.fromkeys(ms, 1.0), "fused")  # fmt: skip

    text = profile_step.format_pair("volo_d1", 224, 128, [fake("ours", 123.456), fake("timm", 0.5)], "cpu")
    assert "1,234.56" in text  # the case that broke the old parser
    _check_table(text, profile_step.CATEGORIES)


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("aten::im2col", "outlook attention"),
        ("aten::col2im", "outlook attention"),
        ("_outlook_bwd_logits_kernel", "outlook attention"),
        ("aten::addmm", "matmul / linear"),
        ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "matmul / linear"),
        ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", "attention (sdpa)"),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution (stem)"),
        ("aten::native_batch_norm_backward", "batch norm"),
        ("void at::native::vectorized_layer_norm_kernel<float, float>", "layer norm"),
        ("aten::_softmax", "softmax"),
        ("aten::gelu_backward", "elementwise / activation"),
        ("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>", "copies / layout"),
        ("aten::t", "copies / layout"),
        ("aten::tanh", "elementwise / activation"),
        ("void multi_tensor_apply_kernel<TensorListMetadata<5>, FusedAdamMathFunctor<float, 4>>", "optimizer"),
        ("autograd::engine::evaluate_function: AddmmBackward0", "other"),
        ("aten::empty", "other"),
    ],
)
def test_categorize(name, category):
    assert load_script("profile_step").categorize(name) == category


def test_cuda_path_counts_kernels_once():
    """No GPU needed: kernel time per step by name, without the GPU-side record_function spans or CPU ops."""
    import torch
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    def event(name, start, end, device=DeviceType.CUDA, **kw):
        return FunctionEvent(id=0, name=name, thread=0, start_us=start, end_us=end, device_type=device, **kw)

    events = [
        event("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", 0, 300, activity_type="kernel"),
        event("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", 400, 500, activity_type="kernel"),
        event("_outlook_fwd_kernel", 500, 700, activity_type="kernel"),
        event("Optimizer.step#AdamW.step", 0, 900, activity_type="gpu_user_annotation", is_user_annotation=True),
        event("aten::mm", 0, 50, device=DeviceType.CPU),
    ]
    ms, calls = load_script("profile_step")._self_times(events, torch.device("cuda"), steps=2)
    expected = {("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "matmul / linear"): 0.2,
                ("_outlook_fwd_kernel", "outlook attention"): 0.1}  # fmt: skip
    assert ms == pytest.approx(expected)
    assert calls[("_outlook_fwd_kernel", "outlook attention")] == 0.5
