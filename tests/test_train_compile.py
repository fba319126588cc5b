"""`train.compile` / `train.compile_mode` reach torch.compile, the compiled training step (MixToken, token labels)
traces as one graph and trains exactly like the eager step."""

import pytest
import torch
from conftest import step_losses

from volo.training.trainer import train


@pytest.mark.timeout(300)
def test_compiled_step_matches_eager_and_gets_the_mode(tiny_run, monkeypatch):
    common = ("train.max_steps=4", "train.deterministic=true")
    eager = train(tiny_run("eager", *common))

    real_compile, calls = torch.compile, []

    def recording_compile(model, **kw):  # dynamo + AOT autograd for real, without a C++ toolchain
        calls.append(kw)
        return real_compile(model, backend="aot_eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(tiny_run("compiled", *common, "train.compile=true", "train.compile_mode=max-autotune"))
    assert calls == [{"mode": "max-autotune"}]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # four MixToken boxes, one graph
    assert step_losses(compiled.run_dir) == pytest.approx(step_losses(eager.run_dir), rel=1e-4)
