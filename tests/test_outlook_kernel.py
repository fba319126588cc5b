"""The fused outlook-attention kernel against the reference: forward and every gradient, per dtype.

On a GPU the kernels run natively (`@pytest.mark.gpu`); on CPU the same kernels run under Triton's interpreter
(`TRITON_INTERPRET=1`, set in a subprocess before triton is imported) on tiny shapes, so CI checks their logic
without a GPU. Outputs are allocated filled with NaN (`POISON_OUTPUTS`), so an element left unwritten fails.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from volo.models.outlook_attention import (
    outlook_attention_reference,
    pool_windows,
    pool_windows_reference,
    select_backend,
)

CUDA = torch.cuda.is_available()
# max |ours - ref| / max |ref| allowed per input dtype (reference computed in fp64 from the same rounded inputs)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def relative_errors(
    device: str,
    dtype: torch.dtype,
    B: int,
    H: int,
    W: int,
    num_heads: int,
    head_dim: int,
    kernel_size: int = 3,
    stride: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Run the fused op and the fp64 reference on fresh random inputs; relative max error of out, dv, dlogits."""
    from volo.models import outlook_triton

    outlook_triton.POISON_OUTPUTS = True
    gen = torch.Generator().manual_seed(seed)
    C, pad = num_heads * head_dim, kernel_size // 2
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    v = torch.randn(B, H, W, C, generator=gen).to(device, dtype)
    logits = (2 * torch.randn(B, h, w, num_heads * kernel_size**4, generator=gen)).to(device, dtype)
    grad = torch.randn(B, H, W, C, generator=gen).to(device, dtype)
    scale = head_dim**-0.5

    v_ref, l_ref = v.double().requires_grad_(), logits.double().requires_grad_()
    out_ref = outlook_attention_reference(v_ref, l_ref, num_heads, kernel_size, pad, stride, scale)
    dv_ref, dl_ref = torch.autograd.grad(out_ref, (v_ref, l_ref), grad.double())

    v_k, l_k = v.clone().requires_grad_(), logits.clone().requires_grad_()
    out_k = outlook_triton.outlook_attention_triton(v_k, l_k, num_heads, kernel_size, pad, stride, scale)
    dv_k, dl_k = torch.autograd.grad(out_k, (v_k, l_k), grad)
    assert out_k.dtype == dtype and dv_k.dtype == dtype and dl_k.dtype == dtype

    def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
        return ((a.double() - ref).abs().max() / ref.abs().max()).item()  # NaN (unwritten) propagates

    return {"out": rel(out_k, out_ref), "dv": rel(dv_k, dv_ref), "dlogits": rel(dl_k, dl_ref)}


# ---- CPU: the reference itself, and the dispatch ---------------------------------------------------------


def test_reference_gradcheck_fp64_odd_sizes():
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(2, 5, 7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(2, 3, 4, 2 * 81, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: outlook_attention_reference(a, b, 2, 3, 1, 2, 0.7), (v, logits))


@pytest.mark.parametrize("shape", [(2, 28, 28, 6), (1, 4, 6, 3), (2, 5, 7, 4), (1, 1, 3, 2), (1, 6, 5, 2)], ids=str)
def test_pool_windows_matches_avg_pool_forward_and_backward(shape):
    """The reshape-mean (even H, W) and the avg_pool2d(ceil_mode) fallback (odd) give the reference's numbers."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    grad = torch.randn(1, generator=gen)  # a scale only; the output grad is drawn below once its shape is known
    for stride in (2, 3):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours, ref = pool_windows(a, stride), pool_windows_reference(b, stride)
        assert ours.shape == ref.shape == (shape[0], -(-shape[1] // stride), -(-shape[2] // stride), shape[3])
        assert torch.allclose(ours, ref, atol=1e-12, rtol=0)
        g = grad * torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        (ga,), (gb,) = torch.autograd.grad(ours, a, g), torch.autograd.grad(ref, b, g)
        assert torch.allclose(ga, gb, atol=1e-12, rtol=0)


def test_outlooker_pools_with_the_reshape_mean(monkeypatch):
    """The model's outlooker takes the reshape-mean path at even sizes: avg_pool2d is never called."""
    import torch.nn.functional as F

    import volo

    model = volo.create_model("volo_tiny", img_size=64).eval()
    calls = []
    real = F.avg_pool2d
    monkeypatch.setattr(F, "avg_pool2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls == []


def test_dispatch_uses_reference_on_cpu():
    assert select_backend(torch.zeros(1, 4, 4, 8)) == "reference"


def test_module_imports_without_gpu_and_registers_backend():
    code = (
        "import torch, volo.models.outlook_attention as oa; import volo.models.outlook_triton as ot;"
        "print(sorted(oa.available_backends()), ot.supports(torch.zeros(1)))"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['reference',", "'triton']", "False"]


# ---- CPU: the Triton kernels under the interpreter ----------------------------------------------------------


def inference_error(B: int, H: int, W: int, num_heads: int, head_dim: int, seed: int = 0) -> float:
    """Relative max error of the no-grad forward (the op that writes no log-sum-exp) against the reference."""
    from volo.models import outlook_triton

    outlook_triton.POISON_OUTPUTS = True
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(B, H, W, num_heads * head_dim, generator=gen)
    logits = 2 * torch.randn(B, math.ceil(H / 2), math.ceil(W / 2), num_heads * 81, generator=gen)
    with torch.no_grad():
        ref = outlook_attention_reference(v.double(), logits.double(), num_heads, 3, 1, 2, 0.5)
        out = outlook_triton.outlook_attention_triton(v, logits, num_heads, 3, 1, 2, 0.5)
    return ((out.double() - ref).abs().max() / ref.abs().max()).item()


INTERPRETER_CASES = [
    # B, H, W, num_heads, head_dim, kernel_size, stride
    (2, 5, 7, 2, 4, 3, 2),  # odd H and W, two samples, two heads
    (1, 4, 4, 3, 2, 3, 2),  # even, three heads
    (1, 3, 3, 1, 32, 3, 2),  # VOLO's head_dim
    (1, 5, 4, 1, 2, 5, 2),  # a 5x5 window: two windows overlap per axis
]


@pytest.mark.timeout(1500)  # the interpreter is slow, and slower still on a shared machine: no speed assumption
def test_triton_kernels_under_interpreter():
    """Forward and both gradients of the real kernels, run by Triton's interpreter on CPU tensors."""
    pytest.importorskip("triton")
    tests_dir = Path(__file__).resolve().parent
    code = (
        f"import sys, json, torch; sys.path.insert(0, {str(tests_dir)!r}); import test_outlook_kernel as t\n"
        f"print(json.dumps([t.relative_errors('cpu', torch.float32, *c[:5], kernel_size=c[5], stride=c[6], seed=i)"
        f" for i, c in enumerate({INTERPRETER_CASES!r})] + [{{'infer': t.inference_error(1, 5, 6, 2, 4)}}]))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1400)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for case, errs in zip([*INTERPRETER_CASES, "no_grad forward"], results, strict=True):
        for name, err in errs.items():
            assert err < 1e-5, f"{name} of case {case}: relative error {err}"


# ---- CPU: the launch plan (grids, warps) for shapes no CPU could run ---------------------------------------


class _RecordingLauncher:
    """Stands in for a wrapped kernel: `launcher[grid](*args, **kw)` records the grid and the keywords."""

    def __init__(self):
        self.launches: list[tuple[tuple[int, int], dict]] = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.launches.append((grid, kw))


def test_grid_of_a_d5_eval_batch_above_the_old_limit(monkeypatch):
    """6,000 D5 images (12 heads: 72,000 (image, head) pairs, over the 65,535 of grid axes 1/2) launch within
    CUDA's limits; shapes only (meta tensors), no GPU and no memory needed."""
    from volo.models import outlook_triton as ot

    fwd, bwd_logits, bwd_v = _RecordingLauncher(), _RecordingLauncher(), _RecordingLauncher()
    monkeypatch.setattr(ot, "_LAUNCH_FWD", fwd)
    monkeypatch.setattr(ot, "_LAUNCH_BWD_LOGITS", bwd_logits)
    monkeypatch.setattr(ot, "_LAUNCH_BWD_V", bwd_v)
    B, H, heads, dim = 6000, 28, 12, 32  # D5 at 224: stage 1 is 28 x 28, 12 heads of 32
    v = torch.empty(B, H, H, heads * dim, device="meta", dtype=torch.bfloat16)
    logits = torch.empty(B, H // 2, H // 2, heads * 81, device="meta", dtype=torch.bfloat16)
    lse = torch.empty(B, H // 2, H // 2, heads, 9, device="meta")
    ot._launch_fwd(v, logits, v, lse, heads, 3, 1, 2, 0.17, True)
    ot._launch_bwd(v, v, logits, lse, v, logits, heads, 3, 1, 2, 0.17)
    launches = fwd.launches + bwd_logits.launches + bwd_v.launches
    assert len(fwd.launches) == len(bwd_v.launches) == 4 and len(bwd_logits.launches) == 1
    for grid, kw in launches:
        assert grid[0] == B * heads and grid[0] <= ot.MAX_GRID_X and 1 <= grid[1] <= ot.MAX_GRID_YZ
        assert kw.get("num_warps", 4) in (4, 8)
    # the (1, 1) parity class (4 windows per pixel) gets 8 warps, the others 4; the dlogits tile holds 8 of 9
    assert [(kw["PY"], kw["PX"], kw["num_warps"]) for _, kw in fwd.launches] == [(0, 0, 4), (0, 1, 4), (1, 0, 4),
                                                                                 (1, 1, 8)]  # fmt: skip
    assert bwd_logits.launches[0][1]["KK_MAIN"] == 8 and fwd.launches[0][1]["WRITE_LSE"] is True
    # what the grid was before (blocks, B * heads): axis 1 over the limit
    assert B * heads > ot.MAX_GRID_YZ
    with pytest.raises(ValueError, match="grid limits"):
        ot.launch_grid(1, 40 * ot.MAX_GRID_YZ, 32)


def test_parity_classes_and_window_tile():
    from volo.models import outlook_triton as ot

    assert [c[3] for c in ot.parity_classes(28, 28, 3, 1, 2)] == [1, 2, 2, 4]
    assert [c[2] for c in ot.parity_classes(5, 7, 3, 1, 2)] == [12, 9, 8, 6]  # pixels per class add to 35
    assert [c[3] for c in ot.parity_classes(9, 9, 3, 1, 1)] == [9]  # stride 1: every pixel reads 9 windows
    assert (ot.kk_main(3), ot.kk_main(5), ot.kk_main(2), ot.kk_main(1)) == (8, 16, 4, 1)


def test_no_grad_forward_writes_no_log_sum_exp(monkeypatch):
    """Under no_grad the launcher is asked for WRITE_LSE=False (with grad: True), on the real dispatch path."""
    from volo.models import outlook_triton as ot

    fwd = _RecordingLauncher()
    monkeypatch.setattr(ot, "_LAUNCH_FWD", fwd)
    v, logits = torch.zeros(1, 4, 4, 8), torch.zeros(1, 2, 2, 2 * 81)
    with torch.no_grad():
        ot.outlook_attention_triton(v, logits, 2)
    ot.outlook_attention_triton(v.requires_grad_(), logits, 2)
    assert [kw["WRITE_LSE"] for _, kw in fwd.launches] == [False] * 4 + [True] * 4


# ---- GPU: native kernels -----------------------------------------------------------------------------------

GPU_SHAPES = [
    (2, 28, 28, 6, 32),  # VOLO-D1 stage 1 at 224
    (2, 27, 29, 4, 32),  # odd
    (3, 13, 10, 1, 32),
    (1, 7, 9, 5, 16),
    (1, 1, 3, 2, 8),  # a single row
    (1, 56, 56, 12, 32),  # VOLO-D5 stage 1 at 448
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
def test_triton_parity_gpu(shape, dtype):
    seed = int(torch.randint(0, 2**31 - 1, ()).item())  # fresh inputs every run; the seed is in the message
    errs = relative_errors("cuda", dtype, *shape, seed=seed)
    for name, err in errs.items():
        assert err < TOLERANCE[dtype], f"{name}: relative error {err} for {shape} {dtype} (seed {seed})"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_triton_parity_gpu_5x5_window():
    errs = relative_errors("cuda", torch.float32, 2, 15, 12, 3, 8, kernel_size=5, seed=7)
    assert max(errs.values()) < 1e-5, errs


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_dispatch_picks_triton_on_cuda_and_model_matches_reference():
    import volo
    from volo.models.outlook_attention import set_backend

    assert select_backend(torch.zeros(1, 4, 4, 8, device="cuda")) == "triton"
    torch.manual_seed(0)
    model = volo.create_model("volo_tiny").cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        fused = model(x)
        set_backend("reference")
        try:
            ref = model(x)
        finally:
            set_backend(None)
    assert ((fused - ref).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_compiled_training_forward_fullgraph_with_fused_kernel():
    import volo

    torch.manual_seed(0)
    model = volo.create_model("volo_tiny").cuda().train()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 224, 224, device="cuda")
    box = torch.tensor([2, 3, 9, 11], device="cuda")
    out = compiled(x, mix_box=box)
    (out.cls_logits.sum() + out.token_logits.sum()).backward()
    eager = model(x, mix_box=box)
    assert torch.allclose(out.cls_logits, eager.cls_logits, atol=1e-4, rtol=1e-4)
