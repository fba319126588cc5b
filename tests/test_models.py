"""The model library: shapes, parameter counts, timm parity (skipped without timm; the rest runs), MixToken,
compile-friendliness, stochastic depth."""

from __future__ import annotations

import pytest
import torch

import volo
from volo.models.volo import box_to_mask, drop_path_rates


@pytest.fixture
def timm():
    """timm for the parity tests only; the other tests here run without it."""
    return pytest.importorskip("timm")


PARAMS_224 = {
    "volo_d1": 26_632_040,
    "volo_d2": 58_678_336,
    "volo_d3": 86_325_072,
    "volo_d4": 192_961_520,
    "volo_d5": 295_455_584,
}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,params", PARAMS_224.items())
def test_parameter_counts_at_224(name, params):
    with torch.device("meta"):
        assert count_params(volo.create_model(name)) == params


@pytest.mark.parametrize(
    "name,size,params", [("volo_d1", 384, 26_777_960), ("volo_d5", 448, 295_907_168), ("volo_d5", 512, 296_091_488)]
)
def test_parameter_counts_at_high_resolution(name, size, params):
    with torch.device("meta"):
        assert count_params(volo.create_model(name, img_size=size)) == params


def test_list_and_names():
    assert volo.list_models() == ["volo_tiny", "volo_d1", "volo_d2", "volo_d3", "volo_d4", "volo_d5"]
    with torch.device("meta"):
        assert volo.create_model("volo_d1_384.sail_in1k").pos_embed.shape == (1, 24, 24, 384)
    with pytest.raises(volo.VoloError, match="Unknown model"):
        volo.create_model("volo_d9")


def test_state_dict_keys_match_timm_exactly(timm):
    ours = volo.create_model("volo_d1").state_dict()
    theirs = timm.create_model("volo_d1_224").state_dict()
    assert len(ours) == 260
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


@pytest.mark.parametrize(
    "timm_name",
    ["volo_d1_224", "volo_d2_224", "volo_d3_224", "volo_d4_224", "volo_d5_224", "volo_d1_384"],
)
def test_eval_parity_with_timm(timm, timm_name):
    torch.manual_seed(0)
    theirs = timm.create_model(timm_name).eval()
    ours = volo.create_model(timm_name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    # Make BatchNorm statistics non-trivial so the stem is really compared.
    for m in theirs.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    size = ours.arch.img_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert got.shape == (1, 1000)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    del theirs, ours


def test_training_outputs_match_timm_forward_train_with_same_box(timm, monkeypatch):
    import timm.models.volo as timm_volo

    torch.manual_seed(0)
    theirs = timm.create_model("volo_d1_224", use_mix_token=True).train()
    ours = volo.create_model("volo_d1").train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    box = (3, 2, 9, 12)  # y1, x1, y2, x2 on the 14x14 token grid; timm's (bbx1, bby1, bbx2, bby2)
    monkeypatch.setattr(timm_volo, "rand_bbox", lambda size, lam, scale=1: box)
    x = torch.randn(3, 3, 224, 224)
    before = [m.running_mean.clone() for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        cls_feat, aux, returned_box = theirs.forward_train(x)
        out = ours(x, mix_box=torch.tensor(box))
    assert returned_box == box
    assert isinstance(out, volo.VoloTrainOutput)
    assert out.token_logits.shape == (3, 196, 1000)
    torch.testing.assert_close(out.cls_logits, theirs.head(cls_feat), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.token_logits, aux, rtol=0, atol=1e-5)
    # BatchNorm ran in training mode in both: our running statistics moved, and moved to timm's
    bn = [(a, b) for a, b in zip(ours.modules(), theirs.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    assert len(bn) == len(before) == 3
    for (a, b), old in zip(bn, before):
        assert not torch.equal(a.running_mean, old)
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-4, atol=1e-6)


def test_mix_box_and_mask_agree_and_unmix_token_logits():
    """Box and mask inputs give the same outputs, mixing reaches the class logits, and the token logits come back
    un-mixed: inside the box, image i's logits are those the mixed image B-1-i computed for that token."""
    torch.manual_seed(0)
    model = volo.create_model("volo_tiny", img_size=64, num_classes=7).train()
    x = torch.randn(4, 3, 64, 64)
    box = torch.tensor([1, 0, 3, 2])
    mask = box_to_mask(box, 4, 4)
    assert mask.sum() == 4 and mask[1:3, 0:2].all()
    with torch.no_grad():
        a = model(x, mix_box=box)
        b = model(x, mix_mask=mask)
        plain = model(x)
        stem = model.forward_stem(x)
        pasted = torch.where(mask.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, :, :, None], stem.flip(0), stem)
        _, raw = model.forward_head_tokens(model.forward_tokens(pasted))  # the mixed images' tokens, not un-mixed
    torch.testing.assert_close(a.token_logits, b.token_logits)
    torch.testing.assert_close(a.cls_logits, b.cls_logits)
    assert not torch.allclose(a.cls_logits, plain.cls_logits, atol=1e-4)
    inside = mask.flatten()
    torch.testing.assert_close(a.token_logits[:, ~inside], raw[:, ~inside], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.token_logits[:, inside], raw.flip(0)[:, inside], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw[:, inside], raw.flip(0)[:, inside], atol=1e-4)
    # An empty box is the same as no mixing.
    with torch.no_grad():
        empty = model(x, mix_box=torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(empty.token_logits, plain.token_logits)


def test_compiles_once_for_any_box_without_graph_breaks():
    torch._dynamo.reset()
    model = volo.create_model("volo_tiny", img_size=64, num_classes=5).train()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=counting_backend, fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 64, 64)
    for box in ([0, 0, 2, 2], [1, 1, 4, 3], [0, 2, 4, 4]):
        out = compiled(x, mix_box=torch.tensor(box))
        ref = model(x, mix_box=torch.tensor(box))
        torch.testing.assert_close(out.token_logits, ref.token_logits)
    assert len(graphs) == 1


def test_stochastic_depth_reference_rule_and_outlooker_option():
    arch = volo.create_model("volo_d1", drop_path_rate=0.1).arch
    rates = drop_path_rates(arch)
    assert rates[:4] == [0.0] * 4
    assert rates[4] == pytest.approx(0.1 * 4 / 17) and rates[-1] == pytest.approx(0.1)
    model = volo.create_model("volo_tiny", drop_path_rate=0.3, drop_path_outlookers=True)
    assert model.network[0][0].drop_path.p == 0.0  # global index 0
    rates = drop_path_rates(model.arch)
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert model.network[2][0].drop_path.p == pytest.approx(0.1)


def test_other_resolutions_and_feature_maps():
    model = volo.create_model("volo_tiny", img_size=96, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 3)
        assert model(torch.randn(1, 3, 128, 160)).shape == (1, 3)  # pos_embed resized on the fly
        feats = model.forward_feature_maps(torch.randn(2, 3, 96, 128))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 12, 16), (2, 64, 6, 8)]
    assert [f["reduction"] for f in model.feature_info] == [8, 16, 16, 16]


def test_clear_errors_for_bad_sizes_and_channels():
    with pytest.raises(volo.VoloError, match="multiple of 16"):
        volo.create_model("volo_tiny", img_size=200)
    model = volo.create_model("volo_tiny", img_size=64).eval()
    with pytest.raises(volo.VoloError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(volo.VoloError, match="multiple of 16"):
        model(torch.randn(1, 3, 72, 64))
    with pytest.raises(volo.VoloError, match="Unknown model option"):
        volo.create_model("volo_tiny", drop_pth_rate=0.1)
