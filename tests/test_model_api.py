"""timm's model API on VOLO: same method names, same outputs as timm's VOLO on the same weights; the feature API;
pretrained_cfg, resolve_data_config / create_transform against timm's; list_models."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import volo
from volo.errors import VoloError

timm = pytest.importorskip("timm")

SIZE = 64  # a 4x4 token grid: the same network as at 224, fast on CPU


@pytest.fixture(scope="module")
def pair():
    """Our volo_d1 and timm's volo_d1_224 holding the same (random) weights, in eval mode."""
    torch.manual_seed(0)
    ours = volo.create_model("volo_d1", img_size=SIZE).eval()
    theirs = timm.create_model("volo_d1_224", img_size=SIZE).eval()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_same_method_names_and_sizes_as_timm(pair):
    ours, theirs = pair
    for name in (
        "forward_features",
        "forward_head",
        "forward_intermediates",
        "get_classifier",
        "reset_classifier",
        "set_grad_checkpointing",
        "prune_intermediate_layers",
        "no_weight_decay",
    ):
        assert callable(getattr(ours, name)) and callable(getattr(theirs, name))
    assert ours.num_classes == theirs.num_classes == 1000
    assert ours.num_features == theirs.num_features == 384
    assert ours.get_classifier().weight.shape == theirs.get_classifier().weight.shape
    assert ours.no_weight_decay() == theirs.no_weight_decay()


@torch.no_grad()
def test_forward_features_and_head_match_timm(pair, images):
    ours, theirs = pair
    f_ours, f_theirs = ours.forward_features(images), theirs.forward_features(images)
    assert f_ours.shape == f_theirs.shape == (2, 1 + 16, 384)
    torch.testing.assert_close(f_ours, f_theirs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.forward_head(f_ours), theirs.forward_head(f_theirs), rtol=1e-4, atol=1e-4)
    pre = ours.forward_head(f_ours, pre_logits=True)
    torch.testing.assert_close(pre, theirs.forward_head(f_theirs, pre_logits=True), rtol=1e-4, atol=1e-4)
    assert torch.equal(ours.forward_head(f_ours), ours(images))  # forward == forward_head(forward_features)


@torch.no_grad()
@pytest.mark.parametrize("indices,norm", [(None, False), (2, True), ([0, -1], False)])
def test_forward_intermediates_match_timm(pair, images, indices, norm):
    ours, theirs = pair
    final_o, maps_o = ours.forward_intermediates(images, indices=indices, norm=norm)
    final_t, maps_t = theirs.forward_intermediates(images, indices=indices, norm=norm)
    assert [m.shape for m in maps_o] == [m.shape for m in maps_t]
    for a, b in zip(maps_o + [final_o], maps_t + [final_t]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    only = ours.forward_intermediates(images, indices=indices, norm=norm, intermediates_only=True)
    for a, b in zip(only, maps_o):
        assert torch.equal(a, b)


def test_feature_info_says_which_strides_exist(pair):
    ours, theirs = pair
    strip = [{k: d[k] for k in ("num_chs", "reduction", "module")} for d in ours.feature_info]
    assert strip == theirs.feature_info
    assert [d["reduction"] for d in ours.feature_info] == [8, 16, 16, 16]


@torch.no_grad()
def test_features_only_matches_timm_and_prunes_the_same(images):
    torch.manual_seed(0)
    full = volo.create_model("volo_d1", img_size=SIZE)
    ours = volo.create_model("volo_d1", img_size=SIZE, features_only=True, out_indices=(0, 1)).eval()
    ours.model.load_state_dict({k: v for k, v in full.state_dict().items() if k in ours.model.state_dict()})
    theirs = timm.create_model("volo_d1_224", img_size=SIZE, features_only=True, out_indices=(0, 1)).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())  # later stages, class attention and heads dropped
    theirs.load_state_dict(ours.state_dict())
    maps_o, maps_t = ours(images), theirs(images)
    assert [m.shape for m in maps_o] == [(2, 192, 8, 8), (2, 384, 4, 4)]
    for a, b in zip(maps_o, maps_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [192, 384]
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [8, 16]


def test_feature_api_errors_name_the_levels():
    with pytest.raises(VoloError, match="levels 0 .stride 8. and 1, 2, 3 .stride 16."):
        volo.create_model("volo_tiny", features_only=True, out_indices=(0, 4))
    with pytest.raises(VoloError, match="features_only=True"):
        volo.create_model("volo_tiny", out_indices=(0,))


@torch.no_grad()
def test_reset_classifier_and_num_classes_zero_match_timm(pair, images):
    ours = volo.create_model("volo_d1", img_size=SIZE).eval()
    theirs = timm.create_model("volo_d1_224", img_size=SIZE).eval()
    theirs.load_state_dict(ours.state_dict())
    ours.reset_classifier(0)
    theirs.reset_classifier(0)
    assert ours.num_classes == theirs.num_classes == 0
    torch.testing.assert_close(ours(images), theirs(images), rtol=1e-4, atol=1e-4)  # pooled features (B, 384)
    ours.reset_classifier(7)
    assert ours(images).shape == (2, 7) and ours.pretrained_cfg["num_classes"] == 7
    pooled = volo.create_model("volo_tiny", img_size=SIZE, num_classes=0).eval()
    assert pooled(images).shape == (2, pooled.num_features)
    with pytest.raises(VoloError, match="class token"):
        ours.reset_classifier(3, global_pool="avg")


@pytest.mark.parametrize("name", ["volo_d1_224", "volo_d1_384", "volo_d3_448", "volo_d5_512"])
def test_pretrained_cfg_matches_timm(name):
    with torch.device("meta"):
        ours = volo.create_model(name)
    theirs = timm.models.get_pretrained_cfg(f"{name}.sail_in1k").to_dict()
    for key in ("input_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "hf_hub_id", "url"):
        assert ours.pretrained_cfg[key] == theirs[key], key
    assert ours.default_cfg is ours.pretrained_cfg


def test_resolve_data_config_and_create_transform_match_timm():
    with torch.device("meta"):
        ours = volo.create_model("volo_d4_448")
        theirs = timm.create_model("volo_d4_448")
    cfg_o = volo.resolve_data_config(model=ours)
    cfg_t = timm.data.resolve_data_config(model=theirs)
    assert cfg_o == {k: cfg_t[k] for k in cfg_o}
    assert volo.resolve_data_config({"img_size": 224, "crop_pct": 0.9}, model=ours)["input_size"] == (3, 224, 224)
    img = Image.fromarray((torch.rand(300, 410, 3) * 255).byte().numpy())
    torch.testing.assert_close(volo.create_transform(**cfg_o)(img), timm.data.create_transform(**cfg_t)(img))
    train = volo.create_transform(**cfg_o, is_training=True)(img)
    assert train.shape == (3, 448, 448)


def test_list_models_pattern_and_pretrained_like_timm():
    assert volo.list_models("volo_d[12]") == ["volo_d1", "volo_d2"]
    assert volo.list_models(pretrained=True) == timm.list_models("volo*", pretrained=True)
    assert volo.list_models("*448*", pretrained=True) == [
        "volo_d3_448.sail_in1k",
        "volo_d4_448.sail_in1k",
        "volo_d5_448.sail_in1k",
    ]


def test_pretrained_and_create_model_errors_point_to_the_fix():
    with pytest.raises(VoloError, match="volo_tiny has no released weights"):
        volo.create_model("volo_tiny", pretrained=True)
    with pytest.raises(VoloError, match="No released volo_d1 weights at 448"):
        volo.create_model("volo_d1_448", pretrained=True)
    with pytest.raises(VoloError, match="second argument is pretrained"):
        volo.create_model("volo_tiny", 224)
    with pytest.raises(VoloError, match="features_only, out_indices"):
        volo.create_model("volo_tiny", feature_only=True)


def test_one_source_of_eval_settings_for_cli_eval_in_run_eval_and_predict():
    """`model.pretrained_cfg` (resolve_data_config), in-run evaluation (`model_eval_config`) and `volo eval`/`predict`
    (`load_model` -> `eval_config_of`) agree for every variant at every common size."""
    from volo.models.variants import eval_config_of
    from volo.training.data import model_eval_config

    for name in volo.list_models():
        for size in (224, 256, 384, 448, 512):
            with torch.device("meta"):
                model = volo.create_model(name, img_size=size)
            in_run = model_eval_config(name, size)
            assert eval_config_of(model.arch) == in_run
            data = volo.resolve_data_config(model=model)
            got = (data["crop_pct"], data["interpolation"], data["mean"], data["std"], data["input_size"])
            assert got == (in_run.crop_pct, in_run.interpolation, in_run.mean, in_run.std, (3, size, size))
