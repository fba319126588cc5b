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

INTERPRETER_CASES = [
    # B, H, W, num_heads, head_dim, kernel_size, stride
    (2, 5, 7, 2, 4, 3, 2),  # odd H and W, two samples, two heads
    (1, 4, 4, 3, 2, 3, 2),  # even, three heads
    (1, 3, 3, 1, 32, 3, 2),  # VOLO's head_dim
    (1, 5, 4, 1, 2, 5, 2),  # a 5x5 window: two windows overlap per axis
]


def test_triton_kernels_under_interpreter():
    """Forward and both gradients of the real kernels, run by Triton's interpreter on CPU tensors."""
    pytest.importorskip("triton")
    tests_dir = Path(__file__).resolve().parent
    code = (
        f"import sys, json, torch; sys.path.insert(0, {str(tests_dir)!r}); import test_outlook_kernel as t\n"
        f"print(json.dumps([t.relative_errors('cpu', torch.float32, *c[:5], kernel_size=c[5], stride=c[6], seed=i)"
        f" for i, c in enumerate({INTERPRETER_CASES!r})]))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for case, errs in zip(INTERPRETER_CASES, results):
        for name, err in errs.items():
            assert err < 1e-5, f"{name} of case {case}: relative error {err}"


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
