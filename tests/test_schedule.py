"""The LR schedule: warmup, cosine, cooldown, per optimiser step, exact values."""

import math

import pytest

from volo.training.config import ScheduleConfig
from volo.training.schedule import build_schedule, total_epochs


def test_schedule_exact_values():
    cfg = ScheduleConfig(epochs=10, warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5, cooldown_epochs=3)
    s = build_schedule(cfg, peak_lr=1e-3, steps_per_epoch=5)
    assert (s.warmup_steps, s.cosine_end, s.total_steps) == (10, 50, 65)
    assert s(0) == 1e-6
    assert s(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5, abs=0, rel=1e-15)
    assert s(10) == 1e-3  # warmup ends exactly at the peak
    assert s(30) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-15)  # half-way through the cosine
    q = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.25))
    assert s(20) == pytest.approx(q, rel=1e-15)
    assert s(49) > 1e-5
    assert s(50) == 1e-5 and s(64) == 1e-5 and s(1000) == 1e-5  # cooldown at min_lr
    assert total_epochs(cfg) == 13


def test_schedule_monotone_and_no_warmup():
    s = build_schedule(ScheduleConfig(epochs=4, warmup_epochs=0, warmup_lr=0.0, min_lr=0.0, cooldown_epochs=0), 2.0, 3)
    values = [s(i) for i in range(s.total_steps)]
    assert values[0] == 2.0
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert s(12) == 0.0


def test_reference_shape_equals_timm_cosine_scheduler_per_epoch():
    """shape='reference' is sail-sg main.py's schedule: timm's CosineLRScheduler stepped once per epoch."""
    timm_sched = pytest.importorskip("timm.scheduler")
    import torch

    cfg = ScheduleConfig(epochs=30, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, cooldown_epochs=10, shape="reference")
    peak, spe = 1.6e-3, 7
    s = build_schedule(cfg, peak_lr=peak, steps_per_epoch=spe)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    ref = timm_sched.CosineLRScheduler(
        opt, t_initial=30, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=5, cycle_limit=1, t_in_epochs=True
    )
    for epoch in range(total_epochs(cfg)):
        expected = opt.param_groups[0]["lr"]  # what main.py trains epoch `epoch` with
        for step in range(epoch * spe, (epoch + 1) * spe):
            assert s(step) == pytest.approx(expected, rel=1e-12), (epoch, step)
        ref.step(epoch + 1)
    # named values: epoch 0 is warmup_lr, epoch 5 (first after warmup) is already below the peak, since the cosine
    # counts the warmup epochs; the per-step shape is at the peak there
    assert s(0) == 1e-6
    assert s(5 * spe) == pytest.approx(1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 5 / 30)), rel=1e-12)
    assert s(5 * spe) < peak == build_schedule(ScheduleConfig(30, 5, 1e-6, 1e-5, 10), peak, spe)(5 * spe)
    assert s(30 * spe) == 1e-5 and s(40 * spe - 1) == 1e-5


def test_reference_shape_resumes_from_its_step():
    cfg = ScheduleConfig(epochs=6, warmup_epochs=2, warmup_lr=0.0, min_lr=0.0, cooldown_epochs=0, shape="reference")
    s = build_schedule(cfg, 1.0, 4)
    assert [s(i) for i in range(0, 24, 4)] == [s(i + 3) for i in range(0, 24, 4)]  # constant within an epoch
    assert s(4) == 0.5 and s(8) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 6)))
