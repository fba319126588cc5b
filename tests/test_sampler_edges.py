"""The resumable sampler's epoch is whole global batches: its length, and a resume point past it is refused."""

from __future__ import annotations

import pytest

from volo.data.sampler import ResumableDistributedSampler
from volo.errors import VoloError


def test_epoch_length_is_whole_global_batches_and_resume_points_stay_inside():
    s = ResumableDistributedSampler(50, world_size=2, rank=1, global_batch=8, seed=0)
    assert (s.epoch_length, s.steps_per_epoch, len(s)) == (48, 6, 24)
    s.set_epoch(0, consumed=48)  # the end of the epoch: nothing left
    assert list(s) == []
    with pytest.raises(VoloError, match="after 49 samples: the epoch has 48"):
        s.set_epoch(0, consumed=49)
