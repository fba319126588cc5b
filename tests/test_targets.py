"""Target construction: exact values in plain mode and token-label mode."""

from __future__ import annotations

import torch

from volo.data.batch import Batch, identity_transforms
from volo.data.targets import build_targets, dense_label_map, sample_label_map, sample_topk_map, smooth_one_hot


def test_plain_mode_is_smoothed_one_hot_everywhere():
    K = 10
    batch = Batch(torch.zeros(3, 3, 64, 48), torch.tensor([2, 0, 9]), identity_transforms(3))
    t = build_targets(batch, K, smoothing=0.1)
    on, off = 0.9 + 0.1 / K, 0.1 / K
    assert t.cls.shape == (3, K) and t.tokens.shape == (3, 4 * 3, K)
    expected = torch.full((3, K), off)
    expected[[0, 1, 2], [2, 0, 9]] = on
    torch.testing.assert_close(t.cls, expected, atol=0, rtol=0)  # float32 on/off, exactly
    torch.testing.assert_close(t.tokens, t.cls[:, None].expand(3, 12, K), atol=0, rtol=0)
    torch.testing.assert_close(t.ground_truth, t.cls, atol=0, rtol=0)
    torch.testing.assert_close(t.cls.sum(-1), torch.ones(3))


def test_dense_map_scatters_topk_with_zeros_elsewhere():
    values = torch.tensor([[[[3.0]], [[1.5]]]]).half()  # (1, k=2, 1, 1)
    ids = torch.tensor([[[[4]], [[1]]]])
    dense = dense_label_map(values, ids, 6)
    assert dense[0, :, 0, 0].tolist() == [0.0, 1.5, 0.0, 0.0, 3.0, 0.0]


def test_uniform_map_gives_softmax_of_topk_then_smoothing():
    """A map that is the same everywhere: every token and the class target equal smooth(softmax(dense))."""
    K, k = 8, 3
    values = torch.tensor([4.0, 2.0, 1.0]).half().reshape(1, k, 1, 1).expand(2, k, 5, 7).contiguous()
    ids = torch.tensor([5, 0, 3]).reshape(1, k, 1, 1).expand(2, k, 5, 7).contiguous()
    lt = torch.tensor([[[0.6, 0.0, 0.1], [0.0, 0.8, -0.2]], [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    batch = Batch(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]), lt, values, ids)
    t = build_targets(batch, K, smoothing=0.1)
    logits = torch.zeros(K)
    logits[[5, 0, 3]] = torch.tensor([4.0, 2.0, 1.0])
    expected = logits.softmax(-1) * 0.9 + 0.1 / K
    torch.testing.assert_close(t.cls, expected.expand(2, K), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.tokens, expected.expand(2, 4, K), atol=1e-6, rtol=0)
    assert abs(t.ground_truth[1, 1].item() - (0.9 + 0.1 / K)) < 1e-7


def test_identity_transform_on_matching_grid_blends_neighbours_like_roi_align():
    """Map 2 x 2 cells, tokens 2 x 2, identity: per axis a token's two points sit at -1/4 (clamped to its own
    cell at the image border) and +1/4 of a cell from its centre, so each token gets 7/8 of its own cell's logits
    and 1/8 of its neighbour's along each axis (RoIAlign with sampling_ratio=2 does the same)."""
    K = 4
    cls = torch.tensor([[0, 1], [2, 3]])
    values = torch.full((1, 1, 2, 2), 8.0).half()
    ids = cls.reshape(1, 1, 2, 2)
    batch = Batch(torch.zeros(1, 3, 32, 32), torch.tensor([0]), identity_transforms(1), values, ids)
    t = build_targets(batch, K, smoothing=0.0)
    own = (
        torch.tensor([0.875 * 0.875, 0.875 * 0.125, 0.125 * 0.875, 0.125 * 0.125]) * 8.0
    )  # own, right, below, diagonal
    logits = torch.stack([own[[0, 1, 2, 3]], own[[1, 0, 3, 2]], own[[2, 3, 0, 1]], own[[3, 2, 1, 0]]])
    torch.testing.assert_close(t.tokens[0], logits.softmax(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.cls[0], torch.full((K,), 0.25), atol=1e-6, rtol=0)


def test_smooth_one_hot_values():
    t = smooth_one_hot(torch.tensor([1]), 5, 0.1)
    torch.testing.assert_close(t, torch.tensor([[0.02, 0.92, 0.02, 0.02, 0.02]]), atol=1e-7, rtol=0)


def _random_batch(seed: int, B=3, k=5, h=9, w=11, K=50, size=96):
    g = torch.Generator().manual_seed(seed)
    values = (torch.randn(B, k, h, w, generator=g) * 3).half()
    ids = torch.stack([torch.randperm(K, generator=g)[:k] for _ in range(B * h * w)]).reshape(B, h, w, k)
    theta = torch.tensor([[0.6, 0.3, 0.2], [-0.25, 0.9, -0.1]]) + 0.4 * torch.randn(B, 2, 3, generator=g)
    return Batch(torch.zeros(B, 3, size, size), torch.arange(B) % K, theta, values, ids.permute(0, 3, 1, 2))


def test_sparse_fast_path_matches_dense_reference():
    """Rotated, sheared, partly-outside views: the scatter-add path equals grid_sample on the dense map."""
    for seed in range(4):
        batch = _random_batch(seed)
        fast = build_targets(batch, 50, method="sparse")
        ref = build_targets(batch, 50, method="dense")
        torch.testing.assert_close(fast.tokens, ref.tokens, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fast.cls, ref.cls, atol=1e-6, rtol=1e-5)
    fast = sample_topk_map(batch.label_values, batch.label_ids, 50, batch.label_transform, (6, 6), 3)
    ref = sample_label_map(dense_label_map(batch.label_values, batch.label_ids, 50), batch.label_transform, (6, 6), 3)
    torch.testing.assert_close(fast[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], ref[1], atol=1e-5, rtol=1e-5)
