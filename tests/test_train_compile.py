"""`train.compile` / `train.compile_mode` reach torch.compile, the compiled training step (MixToken, token labels)
traces as one graph and trains exactly like the eager step."""

import json

import pytest
import torch

from volo.training.config import load_config
from volo.training.trainer import train


def _cfg(tmp_path, name, extra):
    return load_config(
        "debug",
        [
            "model.num_classes=4",
            "model.img_size=32",
            "token_labels.size=null",
            f"data.path={tmp_path / 'data'}",
            f"checkpoint.output_dir={tmp_path / 'runs'}",
            f"checkpoint.run_name={name}",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.log_every=1",
            "train.progress=false",
            "train.deterministic=true",
            *extra,
        ],
    )


def _losses(result) -> list[float]:
    rows = (result.run_dir / "metrics" / "steps.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in rows]


@pytest.mark.timeout(300)
def test_compiled_step_matches_eager_and_gets_the_mode(tmp_path, monkeypatch):
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data" / "train", classes=4, per_class=4, size=40, seed=0)
    make_synthetic_dataset(tmp_path / "data" / "val", classes=4, per_class=1, size=40, seed=1)
    eager = train(_cfg(tmp_path, "eager", []))

    real_compile, calls = torch.compile, []

    def recording_compile(model, **kw):  # dynamo + AOT autograd for real, without a C++ toolchain
        calls.append(kw)
        return real_compile(model, backend="aot_eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", recording_compile)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(_cfg(tmp_path, "compiled", ["train.compile=true", "train.compile_mode=max-autotune"]))
    assert calls == [{"mode": "max-autotune"}]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # four MixToken boxes, one graph
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-4)
