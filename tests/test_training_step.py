"""One optimiser step, the optimiser's groups and the EMA, each against values computed by hand from their formulas.

The step runs at 64 px (a 4x4 token grid) with a MixToken box that is really non-empty, token-label targets that
differ per token, and plain SGD(lr=1) where the test needs to read the applied gradient back from the weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import volo
from volo.data.batch import Batch, identity_transforms
from volo.data.targets import build_targets
from volo.training.config import OptimConfig
from volo.training.ema import ModelEma
from volo.training.loss import TokenLabelingLoss
from volo.training.mixtoken import sample_mix_box
from volo.training.optim import build_optimizer, set_lr
from volo.training.step import StepContext, train_step

K = 5  # classes


def _model(seed: int = 0) -> volo.Volo:
    torch.manual_seed(seed)
    return volo.create_model("volo_tiny", img_size=64, num_classes=K).train()


def _batch(seed: int, b: int = 4) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, 64, 64, generator=g)
    labels = torch.randint(0, K, (b,), generator=g)
    values = torch.randn(b, 3, 4, 4, generator=g).half()
    ids = torch.stack([torch.randperm(K, generator=g)[:3] for _ in range(b * 16)]).reshape(b, 4, 4, 3)
    return Batch(images, labels, identity_transforms(b), values, ids.permute(0, 3, 1, 2).contiguous())


def _rng_with_nonempty_first_box() -> np.random.Generator:
    seed = next(s for s in range(100) if sample_mix_box((4, 4), np.random.default_rng(s)).lam < 0.9)
    return np.random.default_rng(seed)


def _clone_rng(rng: np.random.Generator) -> np.random.Generator:
    twin = np.random.default_rng()
    twin.bit_generator.state = rng.bit_generator.state
    return twin


def _ctx(model, optimizer, rng, clip=None, skip_on_device=False, targets="auto", gt=False) -> StepContext:
    return StepContext(
        net=model,
        ddp=None,
        params=[p for p in model.parameters() if p.requires_grad],
        optimizer=optimizer,
        loss_fn=TokenLabelingLoss(dense_weight=0.5, ground_truth=gt),
        device=torch.device("cpu"),
        num_classes=K,
        smoothing=0.1,
        mixtoken=True,
        mix_rng=rng,
        amp_dtype=None,
        scaler=None,
        clip_grad=clip,
        skip_on_device=skip_on_device,
        targets=targets,
    )


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def _hand_loss(model, batch: Batch, rng: np.random.Generator, gt: bool = False):
    """(total, cls, tokens) of one micro-batch, the MixToken class target mixed by hand: lam*t + (1-lam)*t[B-1-i];
    with `gt` the teacher's class target is first blended per sample with the smoothed one-hot label:
    r * teacher + (1 - r) * label, r = 0.5 where their top classes agree, else 0.9."""
    mix = sample_mix_box((4, 4), rng)
    t = build_targets(batch, K, 0.1)
    t_cls = t.cls
    if gt:
        r = torch.where(t.cls.argmax(-1) == batch.labels, 0.5, 0.9)[:, None]
        t_cls = r * t.cls + (1 - r) * t.ground_truth
    t_cls = mix.lam * t_cls + (1.0 - mix.lam) * t_cls.flip(0)
    out = model(batch.images, mix_box=mix.box)
    cls, tokens = _ce(out.cls_logits, t_cls), _ce(out.token_logits, t.tokens)
    return cls + 0.5 * tokens, cls, tokens


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _norm(ts: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in ts)))


@pytest.mark.parametrize(
    "micro,targets,gt",
    [(1, "sparse", False), (1, "dense", False), (2, "auto", False), (1, "dense", True), (1, "sparse", True)],
)
def test_step_equals_hand_computed_mixtoken_loss_and_update(micro, targets, gt):
    """The logged parts are the hand loss (mean over micro-batches) and SGD(lr=1) moves each weight by -grad,
    on the sparse token-target path and on the dense reference path, with and without the ground-truth blend."""
    model, rng = _model(), _rng_with_nonempty_first_box()
    ref, ref_rng = copy.deepcopy(model), _clone_rng(rng)
    batches = [_batch(10 + i) for i in range(micro)]
    parts = [_hand_loss(ref, b, ref_rng, gt) for b in batches]
    (sum(p[0] for p in parts) / micro).backward()
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_step(_ctx(model, torch.optim.SGD(model.parameters(), lr=1.0), rng, targets=targets, gt=gt), batches)
    expected = [sum(float(p[j].detach()) for p in parts) / micro for j in range(3)]
    assert stats.parts.tolist()[:3] == pytest.approx(expected, rel=1e-5)
    assert float(stats.skipped) == 0.0
    grads = _grads(ref)
    assert float(stats.grad_norm) == pytest.approx(_norm(grads), rel=1e-4)
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - g, rtol=1e-4, atol=1e-6)
    assert rng.bit_generator.state == ref_rng.bit_generator.state  # one box drawn per micro-batch


def test_clipped_gradient_norm_is_at_most_clip():
    model, rng = _model(), _rng_with_nonempty_first_box()
    ref = copy.deepcopy(model)
    batch = _batch(3)
    _hand_loss(ref, batch, _clone_rng(rng))[0].backward()
    grads, clip = _grads(ref), 0.05
    full = _norm(grads)
    assert full > 4 * clip  # the clip really bites
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_step(_ctx(model, torch.optim.SGD(model.parameters(), lr=1.0), rng, clip=clip), [batch])
    applied = [p0 - p.detach() for p, p0 in zip(model.parameters(), before)]  # SGD(lr=1): the clipped gradient
    assert _norm(applied) <= clip * (1 + 1e-4)
    assert _norm(applied) == pytest.approx(clip, rel=1e-3)
    assert float(stats.grad_norm) == pytest.approx(full, rel=1e-4)  # the log shows the norm before clipping
    for a, g in zip(applied, grads):  # same direction: every gradient scaled by clip / norm
        torch.testing.assert_close(a, g * (clip / full), rtol=1e-3, atol=1e-7)


def test_fused_adamw_step_on_device_applies_finite_steps():
    """The on-device skip path (fused AdamW, `found_inf`) still applies a finite step, as plain AdamW would."""
    model, rng = _model(), _rng_with_nonempty_first_box()
    ref = copy.deepcopy(model)
    cfg = OptimConfig(weight_decay=0.05)
    opt = build_optimizer(model, cfg, lr=1e-2)
    assert opt.defaults["fused"] is True
    batch = _batch(4)
    _hand_loss(ref, batch, _clone_rng(rng))[0].backward()
    groups = [
        {"params": _twin(model, ref, g["params"]), "weight_decay": wd} for g, wd in zip(opt.param_groups, [0.05, 0])
    ]
    ref_opt = torch.optim.AdamW(groups, lr=1e-2)
    ref_opt.step()
    # the dense reference targets: Adam's first step divides by |g|, so a near-zero gradient turns the sparse
    # path's fp32 rounding (same loss to 1e-7, tested above and in test_sparse_targets.py) into a visible change
    stats = train_step(_ctx(model, opt, rng, skip_on_device=True, targets="dense"), [batch])
    assert float(stats.skipped) == 0.0
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-6)


def _twin(model, ref, params) -> list[torch.Tensor]:
    """The parameters of `ref` at the positions `params` have in `model`."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    ref_params = list(ref.parameters())
    return [ref_params[index[id(p)]] for p in params]


def test_optimizer_groups_carry_weight_decay_and_zero():
    model = _model()
    opt = build_optimizer(model, OptimConfig(weight_decay=0.05, betas=[0.8, 0.95], eps=1e-7), lr=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.defaults["betas"] == (0.8, 0.95) and opt.defaults["eps"] == 1e-7
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    expected = {n for n, p in model.named_parameters() if p.ndim <= 1} | {"pos_embed", "cls_token"}
    assert no_decay == expected
    assert len(opt.param_groups[0]["params"]) + len(no_decay) == len(names)
    # behaviour: with zero gradients one AdamW step only decays: p * (1 - lr * wd) for the decay group
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1.0 if n in no_decay else 1.0 - 0.1 * 0.05
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-6, atol=0)
    set_lr(opt, 0.125)
    assert [g["lr"] for g in opt.param_groups] == [0.125, 0.125]


def test_one_ema_update_is_decay_times_ema_plus_rest_times_weights():
    model = _model()
    ema = ModelEma(model, decay=0.9)
    e0 = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.5 + 0.01 * i)
    model(torch.randn(2, 3, 64, 64))  # train-mode forward: BatchNorm running stats move
    ema.update(model)
    for e, e_before, w in zip(ema.module.parameters(), e0, model.parameters()):
        torch.testing.assert_close(e, 0.9 * e_before + 0.1 * w.detach(), rtol=1e-6, atol=1e-7)
        assert not e.requires_grad
    for eb, b in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(eb, b)  # buffers are copied, not averaged
    assert not ema.module.training
    again = ModelEma(_model(seed=1), decay=0.9)
    again.load_state_dict(ema.state_dict())
    for a, b in zip(again.module.parameters(), ema.module.parameters()):
        assert torch.equal(a, b)
