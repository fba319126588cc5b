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


def test_profile_report_categories_sum_to_total(tmp_path):
    profile_step = load_script("profile_step")
    out = tmp_path / "profile.md"
    argv = ["--device", "cpu", "--models", "volo_tiny", "--batch", "1", "--img-size", "64", "--steps", "1"]
    assert profile_step.main([*argv, "--warmup", "0", "--out", str(out)]) == out
    text = out.read_text()
    for field in ("- device:", "- driver:", "- versions: torch", "timm", "- commit:", "- date:", "torch threads"):
        assert field in text
    assert "## volo_tiny, batch 1, 64x64" in text
    rows = _table_rows(text, [*profile_step.CATEGORIES, "total"])
    assert set(rows) == {*profile_step.CATEGORIES, "total"}
    for ms_col, pct_col in ((0, 1), (2, 3)):  # ours, timm
        total = float(rows["total"][ms_col].replace(",", ""))
        parts = [float(rows[c][ms_col].replace(",", "")) for c in profile_step.CATEGORIES]
        assert total > 0 and abs(sum(parts) - total) <= 0.01 * total
        assert abs(sum(float(rows[c][pct_col]) for c in profile_step.CATEGORIES) - 100) < 1
    # the step's main parts were all seen, in both implementations
    for category in ("outlook attention", "matmul / linear", "convolution (stem)", "layer norm", "optimizer"):
        assert float(rows[category][0]) > 0 and float(rows[category][2]) > 0
    assert text.count("Top 15 ops, ") == 2


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
