"""What the model computes, pinned without timm: the forward rebuilt by hand from the model's own parts, the blocks
against their equations, MixToken's un-mixing, DropPath's expectation, and strict checkpoint keys.

This file never skips for a missing package: it needs only torch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import volo
from volo.models.blocks import ClassBlock, DropPath, Outlooker, Transformer
from volo.models.outlook_attention import outlook_attention_reference


def _jitter_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial normalisation parameters and statistics: at their init every LayerNorm is the same function
    (weight 1, bias 0), so using one in place of another would go unseen; BatchNorm eval would equal train."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return module


def _model(img_size: int = 64, classes: int = 7) -> volo.Volo:
    torch.manual_seed(0)
    return _jitter_norms(volo.create_model("volo_tiny", img_size=img_size, num_classes=classes))


def _by_hand(model: volo.Volo, x: torch.Tensor, mask: torch.Tensor | None = None):
    """(cls_logits, raw token_logits) from the model's named parts: stem, [MixToken paste at stride 8], outlookers,
    downsample, + pos_embed, transformers, [cls] + tokens through the class blocks, norm, head / aux_head."""
    s = model.patch_embed(x)  # (B, H/8, W/8, C0)
    if mask is not None:  # each token-grid cell covers 2x2 stem cells; the box is pasted from the reversed batch
        m8 = mask.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, :, :, None]
        s = torch.where(m8, s.flip(0), s)
    for block in model.network[0]:
        s = block(s)
    t = model.network[1](s) + model.pos_embed
    for stage in model.network[2:]:
        for block in stage:
            t = block(t)
    B, h, w, C = t.shape
    z = torch.cat([model.cls_token.expand(B, 1, C), t.reshape(B, h * w, C)], dim=1)
    for block in model.post_network:
        z = block(z)
    z = model.norm(z)
    return model.head(z[:, 0]), model.aux_head(z[:, 1:])


def test_eval_logits_are_head_of_cls_plus_half_max_aux_of_tokens():
    model = _model().eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        cls, tokens = _by_hand(model, x)
    assert got.shape == (3, 7)
    torch.testing.assert_close(got, cls + 0.5 * tokens.max(dim=1).values, rtol=1e-5, atol=1e-5)


def test_training_output_is_the_two_heads_without_a_box():
    model = _model().train()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
        cls, tokens = _by_hand(model, x)  # BatchNorm in train mode: batch statistics both times
    torch.testing.assert_close(out.cls_logits, cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.token_logits, tokens, rtol=1e-5, atol=1e-5)


def test_unmixing_gives_every_image_its_own_token_outputs():
    """Inside the box image i was given image B-1-i's content; the output puts those tokens' logits back with
    image B-1-i, so token n of output i is always computed from image i's own patch n."""
    model = _model().train()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    box = torch.tensor([1, 0, 3, 3])  # rows 1-2, columns 0-2 of the 4x4 grid: 6 tokens
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[1:3, 0:3] = True
    with torch.no_grad():
        out = model(x, mix_box=box)
        cls, raw = _by_hand(model, x, inside)  # raw[i, n]: the mixed image i's token n
    flat = inside.flatten()
    torch.testing.assert_close(out.cls_logits, cls, rtol=1e-5, atol=1e-5)  # class logits stay with the mixed image
    torch.testing.assert_close(out.token_logits[:, ~flat], raw[:, ~flat], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.token_logits[:, flat], raw.flip(0)[:, flat], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw[:, flat], raw.flip(0)[:, flat], atol=1e-3)  # the un-mixing is visible


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    B, N, C = x.shape
    return x.reshape(B, N, n, C // n).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, heads merged back: (B, nh, M, d) -> (B, M, nh*d)."""
    a = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v
    return a.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _mlp(m, x):
    return m.fc2(F.gelu(m.fc1(x)))


def test_transformer_block_matches_its_equations():
    torch.manual_seed(0)
    block = _jitter_norms(Transformer(dim=16, num_heads=2, mlp_ratio=3.0)).eval()
    x = torch.randn(2, 3, 5, 16)
    with torch.no_grad():
        got = block(x)
        y = block.norm1(x).reshape(2, 15, 16)
        q, k, v = (_heads(t, 2) for t in block.attn.qkv(y).split(16, dim=-1))
        x1 = x + block.attn.proj(_attend(q, k, v)).reshape(2, 3, 5, 16)
        expected = x1 + _mlp(block.mlp, block.norm2(x1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_outlooker_block_matches_its_equations():
    """x += proj(outlook(v(n1(x)), attn(avgpool_2x2(n1(x))), scale = head_dim ** -0.5)); x += mlp(n2(x))."""
    torch.manual_seed(0)
    block = _jitter_norms(Outlooker(dim=16, num_heads=2, mlp_ratio=3.0)).eval()
    x = torch.randn(2, 6, 6, 16)
    with torch.no_grad():
        got = block(x)
        y = block.norm1(x)
        pooled = F.avg_pool2d(y.permute(0, 3, 1, 2), 2, 2, ceil_mode=True).permute(0, 2, 3, 1)
        a = outlook_attention_reference(block.attn.v(y), block.attn.attn(pooled), 2, 3, 1, 2, (16 // 2) ** -0.5)
        x1 = x + block.attn.proj(a)
        expected = x1 + _mlp(block.mlp, block.norm2(x1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_class_block_updates_only_the_class_token():
    torch.manual_seed(0)
    block = _jitter_norms(ClassBlock(dim=16, num_heads=2, mlp_ratio=3.0)).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        got = block(x)
        y = block.norm1(x)
        k, v = (_heads(t, 2) for t in block.attn.kv(y).split(16, dim=-1))
        q = _heads(block.attn.q(y[:, :1]), 2)
        cls = x[:, :1] + block.attn.proj(_attend(q, k, v))
        cls = cls + _mlp(block.mlp, block.norm2(cls))
    torch.testing.assert_close(got[:, :1], cls, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[:, 1:], x[:, 1:])


def test_outlook_attention_reference_matches_the_loop_definition():
    """Every window centre (i*s, j*s) mixes its KxK neighbours with softmax(scale * logits) per head; the results
    are added back into their pixels (zero padding outside)."""
    torch.manual_seed(0)
    B, H, W, C, nh, K, s, pad, scale = 1, 5, 6, 4, 2, 3, 2, 1, 0.7
    h, w, d = math.ceil(H / s), math.ceil(W / s), C // nh
    v = torch.randn(B, H, W, C, dtype=torch.float64)
    logits = torch.randn(B, h, w, nh * K**4, dtype=torch.float64)
    expected = torch.zeros(B, H, W, C, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            cells = [(i * s - pad + a, j * s - pad + b) for a in range(K) for b in range(K)]
            for n in range(nh):
                attn = (scale * logits[0, i, j].reshape(nh, K * K, K * K)[n]).softmax(-1)
                vals = torch.stack(
                    [v[0, y, x, n * d : (n + 1) * d] if 0 <= y < H and 0 <= x < W else v.new_zeros(d) for y, x in cells]
                )
                for (y, x), o in zip(cells, attn @ vals):
                    if 0 <= y < H and 0 <= x < W:
                        expected[0, y, x, n * d : (n + 1) * d] += o
    got = outlook_attention_reference(v, logits, nh, K, pad, s, scale)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_drop_path_keeps_the_expectation():
    p = 0.25
    layer = DropPath(p).train()
    torch.manual_seed(0)
    x = torch.full((4000, 3, 2), 2.0)
    y = layer(x)
    per_sample = y.reshape(4000, -1)
    kept = per_sample[:, 0] != 0
    assert torch.all(per_sample[kept] == 2.0 / (1 - p))  # survivors rescaled by 1/keep, whole sample at once
    assert torch.all(per_sample[~kept] == 0)
    assert abs(kept.float().mean().item() - (1 - p)) < 0.03
    assert abs(y.mean().item() - 2.0) < 0.1  # E[y] = x
    assert torch.equal(layer.eval()(x), x)  # identity at eval
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_missing_or_extra_checkpoint_key_is_an_error(tmp_path):
    model = _model(img_size=32, classes=3)
    good = model.state_dict()
    cases = {
        "trunk": lambda sd: sd.pop("network.2.0.mlp.fc1.bias"),
        "bn_buffer": lambda sd: sd.pop("patch_embed.conv.1.running_mean"),
        "aux_head": lambda sd: sd.pop("aux_head.weight"),  # same class count: the head is not being replaced
        "head_bias": lambda sd: sd.pop("head.bias"),
        "extra": lambda sd: sd.__setitem__("network.2.0.extra", torch.zeros(1)),
    }
    for name, damage in cases.items():
        sd = dict(good)
        damage(sd)
        torch.save(sd, tmp_path / f"{name}.pth")
        with pytest.raises(volo.VoloError, match="does not match the model"):
            volo.create_model("volo_tiny", img_size=32, num_classes=3, checkpoint=tmp_path / f"{name}.pth")
    torch.save(good, tmp_path / "good.pth")
    again = volo.create_model("volo_tiny", img_size=32, num_classes=3, checkpoint=tmp_path / "good.pth")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), good.values()))
