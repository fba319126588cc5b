"""Weights I/O: every released form loads, resizing and head replacement work, mistakes give clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import volo
from volo.models.weights import adapt_state_dict, arch_from_state_dict, read_state_dict, read_weights_meta


@pytest.fixture(scope="module")
def tiny() -> volo.Volo:
    torch.manual_seed(0)
    return volo.create_model("volo_tiny", img_size=64, num_classes=10).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "wrap,suffix",
    [
        (lambda sd: sd, ".pth"),
        (lambda sd: {"state_dict": sd, "epoch": 3}, ".pth.tar"),
        (lambda sd: {"state_dict_ema": sd, "state_dict": {}}, ".pth"),
        (lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, ".pt"),
    ],
)
def test_released_forms_load(tmp_path: Path, tiny, wrap, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save(wrap(tiny.state_dict()), path)
    loaded = volo.create_model("volo_tiny", img_size=64, num_classes=10, checkpoint=path)
    _same_outputs(tiny, loaded)


def test_safetensors_round_trip_with_config(tmp_path: Path, tiny):
    path = volo.save_weights(tiny, tmp_path / "best", extra={"class_names": ["a"] * 10})
    assert path.suffix == ".safetensors"
    meta = read_weights_meta(path)
    assert meta["variant"] == "volo_tiny" and meta["arch"]["img_size"] == 64
    _same_outputs(tiny, volo.create_model("auto", checkpoint=path))


def test_new_resolution_resizes_pos_embed_bicubic(tmp_path: Path, tiny):
    path = tmp_path / "w.pth"
    torch.save(tiny.state_dict(), path)
    big = volo.create_model("volo_tiny", img_size=96, num_classes=10, checkpoint=path)
    expected = torch.nn.functional.interpolate(
        tiny.pos_embed.detach().permute(0, 3, 1, 2), size=(6, 6), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(big.pos_embed.detach(), expected)
    torch.testing.assert_close(big.head.weight, tiny.head.weight)


def test_new_class_count_reinitialises_heads(tmp_path: Path, tiny):
    path = tmp_path / "w.pth"
    torch.save(tiny.state_dict(), path)
    model = volo.create_model("volo_tiny", img_size=64, num_classes=3)
    missing = volo.load_weights(model, path)
    assert sorted(missing) == ["aux_head.bias", "aux_head.weight", "head.bias", "head.weight"]
    assert model.head.weight.shape == (3, 64)
    torch.testing.assert_close(model.cls_token, tiny.cls_token)


def test_variant_mismatch_names_the_files_variant():
    with torch.device("meta"):
        d4 = volo.create_model("volo_d4").state_dict()
        d2 = volo.create_model("volo_d2")
    assert arch_from_state_dict(d4).embed_dims == (384, 768, 768, 768)
    with pytest.raises(volo.VoloError, match="holds volo_d4 @224 with 1000 classes, but the model is volo_d2"):
        adapt_state_dict(d4, d2, "d4.pth")


def test_not_a_checkpoint_and_missing_file(tmp_path: Path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(volo.VoloError, match="cannot be read"):
        read_state_dict(junk)
    with pytest.raises(volo.VoloError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save({"optimizer": {"lr": torch.tensor(1.0)}}, tmp_path / "opt.pth")
    with pytest.raises(volo.VoloError, match="holds no model weights"):
        read_state_dict(tmp_path / "opt.pth")
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(volo.VoloError, match="not a VOLO model"):
        volo.create_model("volo_tiny", checkpoint=tmp_path / "other.pth")


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload(str(marker))}, f)
    with pytest.raises(volo.VoloError, match="cannot be read") as err:
        read_state_dict(path)
    assert "weights_only" not in str(err.value)  # torch's advice to load unsafely is never relayed
    assert not marker.exists()
    # The payload is real: plain unpickling would run it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_custom_transformer_heads_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    custom = volo.create_model("volo_tiny", img_size=64, num_heads=(1, 4, 4, 4)).eval()
    saved = volo.save_weights(custom, tmp_path / "custom")
    again = volo.create_model("auto", checkpoint=saved)  # the heads come from the metadata beside the weights
    assert again.arch.num_heads == (1, 4, 4, 4)
    _same_outputs(custom, again)
    torch.save(custom.state_dict(), tmp_path / "custom.pth")  # no metadata: the caller names the heads
    _same_outputs(
        custom, volo.create_model("volo_tiny", img_size=64, num_heads=(1, 4, 4, 4), checkpoint=tmp_path / "custom.pth")
    )
    with pytest.raises(volo.VoloError, match="holds"):  # outlooker heads are in the shapes: a clear error
        volo.create_model("volo_tiny", img_size=64, num_heads=(2, 4, 4, 4), checkpoint=tmp_path / "custom.pth")
