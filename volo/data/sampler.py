"""A resumable, sharded sampler: the same global sample order for any world size, startable mid-epoch.

Each epoch's order is one permutation of the dataset drawn from (seed, epoch). The epoch uses the first
`floor(n / global_batch) * global_batch` entries, so every optimiser step sees a full global batch and every rank
gets the same count (DDP needs equal step counts). The images of global step k are positions [k*G, (k+1)*G) whatever
the number of ranks, and rank r takes the r-th contiguous block of G/world_size of them. So 2 processes with batch b
see, per step and per batch, exactly what 1 process with batch b and accumulation 2 sees (same batch-norm groups).

Resume: `set_epoch(epoch, consumed=samples already used this epoch, counted globally)` continues the order from
there. With a different world size (or global batch) the rest of the epoch is re-sharded from the same position, so
no sample repeats or is skipped (only the tail that no longer fills a global batch is dropped; a note says so).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from volo.errors import VoloError


class ResumableDistributedSampler(Sampler[int]):
    """Indices of `num_samples` dataset items for one rank, sharded and resumable.

    `global_batch` = world_size * per-rank batch * accumulation: the epoch is truncated to a multiple of it.
    """

    def __init__(
        self,
        num_samples: int,
        world_size: int = 1,
        rank: int = 0,
        global_batch: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if not 0 <= rank < world_size:
            raise VoloError(f"Sampler rank {rank} is outside the world of {world_size} processes.")
        if global_batch % world_size:
            raise VoloError(f"Global batch {global_batch} is not divisible by the world size {world_size}.")
        if num_samples < global_batch:
            raise VoloError(
                f"The dataset has {num_samples} images, fewer than one global batch of {global_batch}; "
                "lower train.batch_size / train.accumulation or use more data."
            )
        self.num_samples = num_samples
        self.world_size = world_size
        self.rank = rank
        self.global_batch = global_batch
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.consumed = 0

    @property
    def epoch_length(self) -> int:
        """Samples used per epoch, over all ranks (a multiple of the global batch)."""
        return (self.num_samples // self.global_batch) * self.global_batch

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in a full epoch."""
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Start `epoch` after `consumed` samples (global count) of it were already used."""
        if consumed < 0 or consumed > self.epoch_length:
            raise VoloError(
                f"Cannot resume epoch {epoch} after {consumed} samples: the epoch has {self.epoch_length}. "
                "The checkpoint is from another dataset; point --data at the dataset it was trained on."
            )
        if consumed % self.global_batch:
            warnings.warn(
                f"Resuming at sample {consumed} of epoch {epoch}, which is not a multiple of the new global batch "
                f"{self.global_batch} (world size or batch changed); continuing from there without repeats.",
                stacklevel=2,
            )
        self.epoch = epoch
        self.consumed = consumed

    def order(self, epoch: int) -> torch.Tensor:
        """(num_samples,) int64: the global order of `epoch`."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def _remaining(self) -> torch.Tensor:
        rest = self.epoch_length - self.consumed
        usable = (rest // self.global_batch) * self.global_batch
        return self.order(self.epoch)[self.consumed : self.consumed + usable]

    def __iter__(self) -> Iterator[int]:
        per_rank = self.global_batch // self.world_size
        blocks = self._remaining().view(-1, self.world_size, per_rank)  # (steps, ranks, per-rank share)
        return iter(blocks[:, self.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        rest = self.epoch_length - self.consumed
        return (rest // self.global_batch) * self.global_batch // self.world_size

    def state_dict(self) -> dict:
        """Plain ints: where the sampler stands (for the checkpoint)."""
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "world_size": self.world_size}


class ShardSampler(Sampler[int]):
    """Evaluation sharding: rank r reads items r, r + W, r + 2W, ... of the dataset, in order, with no padding.

    Ranks may get one item more or less; counts are summed over ranks afterwards, so every image counts once.
    """

    def __init__(self, num_samples: int, world_size: int = 1, rank: int = 0):
        self.num_samples, self.world_size, self.rank = num_samples, world_size, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
