"""The PyTorch loader's batches hold each sample's own image, label, transform and token labels, in order."""

from __future__ import annotations

import torch

from volo.data.dataset import Sample
from volo.data.loader import LoaderConfig, build_loader, collate_samples


def _sample(i: int) -> Sample:
    g = torch.Generator().manual_seed(i)
    return Sample(
        image=torch.randn(3, 8, 8, generator=g),
        label=i % 3,
        label_transform=torch.randn(2, 3, generator=g),
        label_values=torch.randn(2, 4, 4, generator=g).half(),
        label_ids=torch.randint(0, 3, (2, 4, 4), generator=g, dtype=torch.int16),
        index=i,
    )


def test_collate_keeps_every_sample_in_its_place():
    samples = [_sample(i) for i in range(4)]
    for batch in (collate_samples(samples), next(iter(build_loader(samples, LoaderConfig(4, 0), shuffle=False)))):
        assert batch.labels.tolist() == [0, 1, 2, 0] and batch.labels.dtype == torch.int64
        assert batch.label_ids.dtype == torch.int64  # widened, as the Batch contract says
        for i, s in enumerate(samples):
            assert torch.equal(batch.images[i], s.image)
            assert torch.equal(batch.label_transform[i], s.label_transform)
            assert torch.equal(batch.label_values[i], s.label_values)
            assert torch.equal(batch.label_ids[i], s.label_ids.long())
