"""The run's backend settings are set inside a run and restored after it, deterministic runs excepted."""

import pytest
import torch

from volo.training.speed import speed_settings


def _flags():
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )


@pytest.mark.parametrize("deterministic", [False, True])
def test_set_inside_restored_after(deterministic):
    before = _flags()
    with speed_settings(deterministic):
        det, bench, tf32_mm, tf32_conv = _flags()
        assert det == (deterministic or before[0])
        assert bench == (not deterministic)  # cuDNN autotuning is not deterministic
        assert tf32_mm and tf32_conv
    assert _flags() == before


def test_restored_after_an_error():
    before = _flags()
    with pytest.raises(RuntimeError), speed_settings(False):
        raise RuntimeError("boom")
    assert _flags() == before
