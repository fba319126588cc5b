"""Hostile or broken weights files: real safetensors files with damaged tensors, real damaged JSON sidecars, a
real malicious pickle. Each is a one-line VoloError (or CLI error), never a traceback or a huge allocation; shapes
come from the tensors and the sidecar is checked against them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from faults.png import write_png
from safetensors.torch import load_file, save_file

from volo.cli.main import main
from volo.errors import VoloError
from volo.labeling.public import PublicLabelStore
from volo.models.registry import create_model
from volo.models.weights import read_state_dict, save_weights
from volo.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A real export: tiny.safetensors + tiny.json."""
    torch.manual_seed(0)
    return save_weights(create_model("volo_tiny", img_size=32, num_classes=4), tmp_path_factory.mktemp("w") / "tiny")


def one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text
    print(f"\nRELIABILITY bad-input: {text}")
    return text


@pytest.mark.parametrize(
    ("key", "tensor", "fragment"),
    [
        ("pos_embed", torch.zeros(10), "tensor pos_embed has shape (10,), expected a non-empty 4-D tensor"),
        ("head.weight", torch.tensor(1.0), "tensor head.weight has shape (), expected a non-empty 2-D tensor"),
        ("patch_embed.conv.0.weight", torch.zeros(5), "patch_embed.conv.0.weight has shape (5,)"),
        ("network.0.0.norm1.weight", torch.zeros(0), "network.0.0.norm1.weight has shape (0,)"),
        ("head.weight", torch.zeros(4, 3), "head.weight is (4, 3), the model's (4, 64)"),
        ("network.2.0.mlp.fc2.weight", torch.zeros(5, 5), "network.2.0.mlp.fc2.weight is (5, 5)"),
    ],
)
def test_damaged_tensor_in_safetensors(tiny: Path, tmp_path: Path, key: str, tensor: torch.Tensor, fragment: str):
    tensors = load_file(str(tiny))
    assert key in tensors
    path = tmp_path / "damaged.safetensors"
    save_file({**tensors, key: tensor}, str(path))  # no sidecar: the tensors alone
    with pytest.raises(VoloError) as err:
        create_model("auto", checkpoint=path)
    one_line(err, str(path), fragment)
    with pytest.raises(VoloError):
        create_model("volo_tiny", img_size=32, num_classes=4, checkpoint=path)


def _sidecar(tiny: Path, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.safetensors"
    path.write_bytes(tiny.read_bytes())
    path.with_suffix(".json").write_text(text)
    return path


def _arch(tiny: Path, **changes) -> str:
    meta = json.loads(tiny.with_suffix(".json").read_text())
    meta["arch"].update(changes)
    return json.dumps(meta)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{oops", "is not readable JSON"),
        (b"\xff\xfe\x00binary".decode("latin-1"), "is not readable JSON"),
        ('{"variant": "volo_tiny"}', "has no 'arch' object"),
        ("[1, 2]", "has no 'arch' object"),
        ("ARCH:embed_dims=100000", "disagrees with the tensors"),
        ("ARCH:num_classes=100000", "(num_classes: sidecar 100000, tensors 4)"),
        ("ARCH:num_heads=7", "'arch' is malformed"),
        ("ARCH:num_heads=[1,5,5,5]", "do not divide embed_dims"),
    ],
)
def test_damaged_or_lying_sidecar(tiny: Path, tmp_path: Path, text: str, fragment: str):
    if text.startswith("ARCH:"):
        field, value = text[5:].split("=")
        value = json.loads(value)
        if field == "embed_dims":
            value = [value] * 4  # would allocate ~40 GB if the sidecar were trusted
        text = _arch(tiny, **{field: value})
    path = _sidecar(tiny, tmp_path, text)
    with pytest.raises(VoloError) as err:
        create_model("auto", checkpoint=path)
    one_line(err, fragment)


def test_sound_sidecar_still_gives_what_shapes_cannot(tiny: Path, tmp_path: Path):
    model = create_model("volo_tiny", img_size=32, num_classes=4, num_heads=(1, 4, 4, 4))
    path = save_weights(model, tmp_path / "heads")
    assert create_model("auto", checkpoint=path).arch.num_heads == (1, 4, 4, 4)  # from the sidecar
    path.with_suffix(".json").unlink()
    assert create_model("auto", checkpoint=path).arch.embed_dims == model.arch.embed_dims  # from the tensors


# -- a malicious pickle: the refusal names the global, never relays torch's weights_only=False advice ----------
class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_refusal_names_the_global(tiny: Path, tmp_path: Path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": load_file(str(tiny)), "hook": Payload(marker)}, evil)
    (tmp_path / "labels" / "c").mkdir(parents=True)
    torch.save([Payload(marker)], tmp_path / "labels" / "c" / "x.pt")
    for load in (read_state_dict, load_checkpoint, lambda p: create_model("auto", checkpoint=p)):
        with pytest.raises(VoloError) as err:
            load(evil)
        text = one_line(err, str(evil), f"pickled object {os.system.__module__}.system", "could run code")
        assert "weights_only" not in text and "Re-running" not in text, text
    with pytest.raises(VoloError) as err:
        PublicLabelStore(tmp_path / "labels")
    assert "weights_only" not in one_line(err, "x.pt", ".system")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["predict", str(evil), str(write_png(tmp_path / "photo.png", 40, 30))])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and ".system" in lines[0] and "weights_only" not in lines[0], lines
    assert not marker.exists()
