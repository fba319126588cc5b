"""DALI backend (CPU-only pipelines, device_id=None): batch contract, label alignment, sharding, checkpoint/resume.

Skipped where `nvidia.dali` is not installed (`pip install nvidia-dali-cuda130`). Helpers and the asymmetric
dataset come from test_loader_backends.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("nvidia.dali")

from test_loader_backends import (  # noqa: E402
    DictLabels,
    check_token_labels,
    cluster_agreement,
    colour_agreement,
    contract,
    make_dataset,
    options,
    reference_batch,
)

from volo.data.backends import build_train_loader  # noqa: E402
from volo.data.loader_spec import scan_for  # noqa: E402

pytestmark = [pytest.mark.dali, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("asym_dali"))


def test_dali_contract_matches_pytorch(dataset):
    ref = contract(reference_batch(dataset, 32))
    loader = build_train_loader(options(dataset, rand_augment="", backend="dali"))
    batch = next(iter(loader))
    assert contract(batch) == ref
    scan = scan_for(options(dataset))
    assert batch.labels.tolist() == [scan.samples[i].label for i in loader.last_indices.tolist()]


@pytest.mark.parametrize("rand_augment", ["", "rand-m10-mstd1-inc1"])  # m10: strongest ops, clipping
def test_dali_label_transform_follows_pixels(dataset, rand_augment):
    loader = build_train_loader(options(dataset, rand_augment=rand_augment, backend="dali"))
    warped = 0
    for _ in range(2):
        for batch in loader:
            if rand_augment:
                assert cluster_agreement(batch) > 0.97
            else:
                assert colour_agreement(batch) > 0.97
            warped += int((batch.label_transform[:, :, :2].abs() > 1e-6).sum(dim=(1, 2)).gt(2).sum())
    assert (warped > 0) == bool(rand_augment)


@pytest.mark.parametrize("per_class", [8, 9])
def test_dali_two_ranks_disjoint_equal_counts(tmp_path, per_class):
    root = make_dataset(tmp_path, per_class=per_class)
    n = 2 * per_class
    per_rank = []
    for rank in range(2):
        loader = build_train_loader(options(root, rank=rank, world_size=2, rand_augment="", backend="dali"))
        assert len(loader) == (n + 1) // 2 // 4
        epochs = []
        for _ in range(2):
            epochs.append([i for _ in loader for i in loader.last_indices.tolist()])
        per_rank.append(epochs)
    for epoch in range(2):
        a, b = per_rank[0][epoch], per_rank[1][epoch]
        assert len(a) == len(b) == len(loader) * 4
        assert len(set(a)) == len(a) and len(set(b)) == len(b)
        assert not set(a) & set(b)
        if n == 16:
            assert set(a) | set(b) == set(range(16))
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled between epochs


def test_dali_checkpoint_resumes_exact_order(dataset):
    loader = build_train_loader(options(dataset, backend="dali"))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert isinstance(state["dali_checkpoint"], (bytes, str)) and state["position"] == 1
    rest = [(loader.last_indices.tolist(), b.images.clone()) for b in it]
    rest += [(loader.last_indices.tolist(), b.images.clone()) for b in loader]  # and the next epoch
    resumed = build_train_loader(options(dataset, backend="dali"))
    resumed.load_state_dict(state)
    again = [(resumed.last_indices.tolist(), b.images.clone()) for b in resumed]
    again += [(resumed.last_indices.tolist(), b.images.clone()) for b in resumed]
    assert [r[0] for r in rest] == [a[0] for a in again]
    for (_, x), (_, y) in zip(rest, again):
        torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_dali_token_labels_follow_the_sample(dataset):
    loader = build_train_loader(options(dataset, rand_augment="", token_labels=DictLabels(), backend="dali"))
    assert len(loader.images) == 15
    for batch in loader:
        check_token_labels(batch, [loader.images.samples[i].key for i in loader.last_indices.tolist()])
