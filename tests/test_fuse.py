"""Folding the stem's BatchNorms into its convolutions changes no output (the unfused model is the reference)."""

import pytest
import torch
from torch import nn

import volo
from volo.errors import VoloError
from volo.models.blocks import PatchEmbed
from volo.models.fuse import fold_batchnorm, fuse_for_inference


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize("bias", [False, True])
def test_fold_batchnorm_equals_conv_then_bn(bias):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=bias), nn.BatchNorm2d(8)
    _randomise_bn(bn)
    bn.eval()
    x = torch.randn(2, 3, 17, 15)
    torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, size", [("volo_tiny", 64), ("volo_d1", 96)])
def test_fused_model_matches_the_reference(name, size):
    torch.manual_seed(0)
    ref = volo.create_model(name, img_size=size, num_classes=7).eval()
    _randomise_bn(ref)
    fused = volo.create_model(name, img_size=size, num_classes=7).eval()
    fused.load_state_dict(ref.state_dict())
    fuse_for_inference(fused)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    stem = [m for m in fused.modules() if isinstance(m, PatchEmbed)][0].conv
    assert [type(m).__name__ for m in stem] == ["Conv2d", "ReLU"] * 3 and all(m.bias is not None for m in stem[::2])
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-5)


def test_training_mode_is_refused():
    with pytest.raises(VoloError, match="needs a model in eval mode"):
        fuse_for_inference(volo.create_model("volo_tiny", img_size=32).train())
