"""The device prefetcher hands out the loader's batches unchanged, in order, on the device; on CUDA the copy runs
on a side stream."""

import pytest
import torch

from volo.data.batch import Batch, identity_transforms
from volo.data.prefetch import DevicePrefetcher


def _batches(n: int, with_labels: bool = True) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        out.append(
            Batch(
                images=torch.randn(2, 3, 8, 8, generator=g),
                labels=torch.tensor([i, i + 1]),
                label_transform=identity_transforms(2),
                label_values=torch.randn(2, 3, 2, 2, generator=g).half() if with_labels else None,
                label_ids=torch.randint(0, 5, (2, 3, 2, 2), generator=g) if with_labels else None,
            )
        )
    return out


def _assert_same(got: list[Batch], want: list[Batch]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for name in ("images", "labels", "label_transform", "label_values", "label_ids"):
            x, y = getattr(a, name), getattr(b, name)
            if y is None:
                assert x is None
            else:
                assert torch.equal(x.cpu(), y)


@pytest.mark.parametrize("with_labels", [True, False])
def test_cpu_passthrough_keeps_order_and_values(with_labels):
    src = _batches(4, with_labels)
    _assert_same(list(DevicePrefetcher(src, "cpu")), src)


def test_reads_one_batch_at_a_time_on_cpu():
    pulled = []

    def gen():
        for b in _batches(3):
            pulled.append(int(b.labels[0]))
            yield b

    it = DevicePrefetcher(gen(), "cpu")
    next(it)
    assert pulled == [0]  # no read-ahead off CUDA
    assert len(list(it)) == 2


def test_empty_source():
    assert list(DevicePrefetcher([], "cpu")) == []


@pytest.mark.gpu
def test_cuda_batches_arrive_on_device_in_order():
    src = [b.pin_memory() for b in _batches(5)]
    it = DevicePrefetcher(src, "cuda")
    got = []
    for b in it:
        assert b.images.is_cuda and b.label_ids.is_cuda
        b.images.mul_(1.0)  # compute on the current stream uses the copied tensor
        got.append(b)
    torch.cuda.synchronize()
    _assert_same(got, src)
