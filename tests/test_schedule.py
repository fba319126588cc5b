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
