"""The evaluation crop's label transform points at the pixels the crop really shows, including torchvision's
rounding of an odd margin (round half to even: a 3-pixel margin puts the crop at offset 2, not 1)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from volo.data.transforms import EvalTransform


@pytest.mark.parametrize("margin", [1, 2, 3, 4, 5, 7])
def test_eval_crop_offset_in_the_label_transform_matches_the_image(margin):
    crop = 16
    side = crop + margin  # resize to `side` is the identity: crop_pct = crop / side
    columns = np.arange(side, dtype=np.uint8) * 10  # each source column has its own grey level
    img = Image.fromarray(np.repeat(np.tile(columns, (side, 1))[:, :, None], 3, axis=2))
    t = EvalTransform(img_size=crop, crop_pct=crop / side, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert t.scale_size == side
    out = t(img)
    shown = round(float(out.image[0, 0, 0]) * 255 / 10)  # the source column of the output's first column
    x_left = out.label_transform[0] @ np.array([-1.0, 0.0, 1.0])  # output left edge, in source coordinates
    assert (x_left + 1) * side / 2 == pytest.approx(shown, abs=1e-4)
    assert shown == int(round(margin / 2))  # torchvision's centre crop
