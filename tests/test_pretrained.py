"""`pretrained=True` finds the released weights where timm would (Hugging Face cache, torch.hub cache), in an
offline mirror or a local file; offline with nothing found it fails in one line. No test downloads: `_download`
is replaced by a function that fails the test."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import volo
from volo.errors import VoloError
from volo.models import pretrained as pt


@pytest.fixture(scope="module")
def d1_weights(tmp_path_factory):
    """A D1 @224 state dict (random init, the released layout) as .safetensors and as a released .pth.tar."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    sd = volo.create_model("volo_d1").state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    torch.save({"state_dict_ema": sd}, folder / "d1_224_84.2.pth.tar")
    return folder, sd


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Empty caches, no mirror, and any download attempt fails the test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VOLO_PRETRAINED", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VOLO_OFFLINE", raising=False)

    def no_download(repo_id):
        raise AssertionError(f"a test tried to download {repo_id}")

    monkeypatch.setattr(pt, "_download", no_download)


def hf_cache_entry(cache, repo_id: str, source) -> None:
    """The layout huggingface_hub (and so timm) leaves: refs/main -> snapshots/<rev>/model.safetensors."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "model.safetensors").symlink_to(source)


def test_pretrained_true_loads_from_the_hugging_face_cache(d1_weights, tmp_path):
    folder, sd = d1_weights
    hf_cache_entry(tmp_path / "hf", "timm/volo_d1_224.sail_in1k", folder / "model.safetensors")
    model = volo.create_model("volo_d1", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert model.pretrained_cfg["hf_hub_id"] == "timm/volo_d1_224.sail_in1k" and model.load_notes == []


def test_pretrained_from_the_torch_hub_cache_at_a_new_size_and_class_count(d1_weights, tmp_path):
    folder, sd = d1_weights
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "d1_224_84.2.pth.tar").symlink_to(folder / "d1_224_84.2.pth.tar")
    model = volo.create_model("volo_d1", pretrained=True, img_size=256, num_classes=10)
    assert model.pos_embed.shape == (1, 16, 16, 384) and model.num_classes == 10
    assert torch.equal(model.state_dict()["network.0.0.norm1.weight"], sd["network.0.0.norm1.weight"])
    notes = ["pos_embed resized 14x14 -> 16x16 (bicubic)", "heads re-initialised: 1000 -> 10 classes"]
    assert model.load_notes == notes


def test_offline_mirror_env_file_and_overlay_file(d1_weights, tmp_path, monkeypatch):
    folder, _ = d1_weights
    monkeypatch.setenv("VOLO_PRETRAINED", str(folder))  # a mirror folder holding the released file name
    assert pt.find_pretrained("volo_d1", 224) == folder / "d1_224_84.2.pth.tar"
    monkeypatch.setenv("VOLO_PRETRAINED", str(folder / "model.safetensors"))  # one file
    assert pt.find_pretrained("volo_d1", 224) == folder / "model.safetensors"
    monkeypatch.delenv("VOLO_PRETRAINED")
    assert pt.find_pretrained("volo_d1", 224, file=folder / "model.safetensors") == folder / "model.safetensors"
    mirror = tmp_path / "mirror" / "volo_d1_224.sail_in1k"
    mirror.mkdir(parents=True)
    (mirror / "model.safetensors").symlink_to(folder / "model.safetensors")
    monkeypatch.setenv("VOLO_PRETRAINED", str(tmp_path / "mirror"))  # a copy of the hub repo folder
    assert pt.find_pretrained("volo_d1", 224) == mirror / "model.safetensors"


def test_offline_with_nothing_found_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VoloError) as err:
        volo.create_model("volo_d2_384", pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and "volo_d2_384.sail_in1k not found" in msg and "offline" in msg
    assert "d2_384_86.0.pth.tar" in msg and "$VOLO_PRETRAINED" in msg


def test_a_failed_download_is_one_line_too(monkeypatch):
    def no_network(repo_id):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(pt, "_download", no_network)
    with pytest.raises(VoloError, match=r"download from hf.co/timm/volo_d5_512.sail_in1k failed: OSError"):
        pt.find_pretrained("volo_d5", 512)
    monkeypatch.setenv("VOLO_PRETRAINED", "/nonexistent/weights")
    with pytest.raises(VoloError, match="neither a weights file nor a folder"):
        pt.find_pretrained("volo_d5", 512)
