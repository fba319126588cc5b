"""Random erasing of a whole batch on its own device, for the DALI and nvJPEG loaders.

The same augmentation as the PyTorch path's per-image `torchvision.transforms.RandomErasing(p, value="random")`
(timm's `RandomErasing(p, mode="pixel")`): with probability p a sample gets one rectangle of area fraction
U(0.02, 0.33) and aspect ratio h/w log-uniform in [0.3, 3.3], tried up to 10 times until it fits strictly inside the
image (no erasing when none fits), placed uniformly, filled with standard-normal noise. It runs after normalisation
and touches the image only: the token-label geometry (`Batch.label_transform`) stays as it was.

Here every draw is one tensor op over the batch, made on the images' device from an explicit `torch.Generator`, so
nothing goes back to the host. The loaders re-seed their generator per batch from (seed, rank, epoch, step)
(`erasing_seed`), so a resumed run erases exactly as the uninterrupted one without saving any generator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SCALE = (0.02, 0.33)
"""Area of the rectangle as a fraction of the image (torchvision's default, as the PyTorch path uses)."""
RATIO = (0.3, 3.3)
"""Aspect ratio h / w of the rectangle, drawn log-uniformly."""
ATTEMPTS = 10
"""Draws of (area, ratio) until the rectangle fits; after that many misfits the sample is left alone."""
ERASING_STREAM = 0x45524153  # "ERAS": keeps these seeds apart from the loaders' other seeded streams


@dataclass
class EraseBoxes:
    """One rectangle per sample, in pixels; every field is (B,) on the images' device."""

    applied: torch.Tensor
    """bool: the sample is erased (its coin came up and one of the attempts fitted)."""
    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor

    def mask(self, height: int, width: int) -> torch.Tensor:
        """(B, H, W) bool: the erased pixels (all false for samples not erased)."""
        rows = torch.arange(height, device=self.top.device)
        cols = torch.arange(width, device=self.top.device)
        in_rows = (rows >= self.top[:, None]) & (rows < (self.top + self.height)[:, None])
        in_cols = (cols >= self.left[:, None]) & (cols < (self.left + self.width)[:, None])
        return self.applied[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]


def sample_boxes(
    batch: int,
    height: int,
    width: int,
    prob: float,
    generator: torch.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> EraseBoxes:
    """torchvision's `RandomErasing.get_params` for `batch` samples at once, on the generator's device."""
    device = generator.device
    coin = torch.rand(batch, generator=generator, device=device)
    area = torch.empty(batch, ATTEMPTS, device=device).uniform_(*scale, generator=generator) * (height * width)
    log_ratio = torch.empty(batch, ATTEMPTS, device=device)
    aspect = log_ratio.uniform_(float(np.log(ratio[0])), float(np.log(ratio[1])), generator=generator).exp_()
    h = (area * aspect).sqrt_().round_().long()  # round half to even, like Python's round
    w = (area / aspect).sqrt_().round_().long()
    fits = (h < height) & (w < width)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first attempt that fits (argmax returns the first maximum)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    # randint(0, n - k + 1) per sample: floor(U * (n - k + 1)), clamped against U * n rounding up to n in float32
    top = (torch.rand(batch, generator=generator, device=device) * (height - h + 1)).long().clamp_(max=height - h)
    left = (torch.rand(batch, generator=generator, device=device) * (width - w + 1)).long().clamp_(max=width - w)
    applied = (coin < prob) & fits.any(dim=1)
    return EraseBoxes(applied, top, left, h, w)


def erase_batch(images_bchw: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """`images_bchw` (B, C, H, W), normalised, with one rectangle (`sample_boxes`) per sample, with probability
    `prob`, replaced by standard-normal noise in the images' dtype; a new tensor (the input may be a view of a
    loader's buffer, e.g. DALI's output, so it is not written).

    `generator` must live on the images' device. prob <= 0 draws nothing and returns the images as they are.
    """
    if prob <= 0:
        return images_bchw
    assert generator.device == images_bchw.device, (generator.device, images_bchw.device)
    B, C, H, W = images_bchw.shape
    mask = sample_boxes(B, H, W, prob, generator).mask(H, W)[:, None]  # (B, 1, H, W), broadcast over channels
    noise = torch.randn(images_bchw.shape, generator=generator, device=images_bchw.device, dtype=images_bchw.dtype)
    return torch.where(mask, noise, images_bchw)


def erasing_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """A 64-bit generator seed per (run seed, global rank, epoch, batch of the epoch), well mixed."""
    return int(np.random.SeedSequence([ERASING_STREAM, seed, rank, epoch, step]).generate_state(1, np.uint64)[0])


class BatchErasing:
    """A loader's random erasing: owns the generator (made on the batch's device on first use), re-seeded per batch
    from the loader's position so that resuming from a saved position repeats the very same rectangles and noise."""

    def __init__(self, prob: float) -> None:
        self.prob = prob
        self.generator: torch.Generator | None = None

    def __call__(self, images_bchw: torch.Tensor, seed: int) -> torch.Tensor:
        if self.prob <= 0:
            return images_bchw
        if self.generator is None or self.generator.device != images_bchw.device:
            self.generator = torch.Generator(device=images_bchw.device)
        self.generator.manual_seed(seed)
        return erase_batch(images_bchw, self.prob, self.generator)
