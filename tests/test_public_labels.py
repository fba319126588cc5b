"""Public TokenLabeling label files with their real geometry (a centre crop) and an ImageNet-subset class map.

A label file is made the way TokenLabeling's generate_label.py makes one: the map covers the centred square of
side crop_pct x the short side of a non-square image. Read through the PyTorch data path with that crop_pct, every
token's target says the class of what its pixels show; read as a whole-image map (the original code's reading),
some do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from volo.data.dataset import ImageFolderDataset
from volo.data.loader import collate_samples
from volo.data.targets import build_targets
from volo.data.transforms import WholeImageTransform
from volo.errors import VoloError
from volo.labeling.public import PublicLabelStore, fold_centre_crop

W, H, CROP, MAP = 160, 96, 0.75, 6
SIDE = CROP * H  # 72 px: the square x in [44, 116), y in [12, 84)
X0, Y0 = (W - SIDE) / 2, (H - SIDE) / 2
OBJECT = (X0, Y0, X0 + SIDE / 3, Y0 + SIDE / 3)  # the square's top-left ninth: map cells [0:2, 0:2]


def _write(root, wnid="n01440764", name="img"):
    """An image whose object fills OBJECT, and the label file a generator with CROP would have written for it."""
    arr = np.full((H, W, 3), 90, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in OBJECT)
    arr[y1:y2, x1:x2] = (240, 30, 30)
    (root / "images" / wnid).mkdir(parents=True)
    Image.fromarray(arr).save(root / "images" / wnid / f"{name}.png")
    cls = np.zeros((MAP, MAP), np.int64)
    cls[:2, :2] = 1  # class 1 where the object is, in the crop's own cells
    ids = np.stack([cls, 1 - cls])  # (k=2, 6, 6) best first
    values = np.stack([np.full((MAP, MAP), 6.0), np.zeros((MAP, MAP))])
    (root / "labels" / wnid).mkdir(parents=True)
    torch.save(torch.tensor(np.stack([values, ids]), dtype=torch.float16), root / "labels" / wnid / f"{name}.pt")


def _token_classes(root, crop_pct):
    store = PublicLabelStore(root / "labels", num_classes=2, crop_pct=crop_pct)
    dataset = ImageFolderDataset(root / "images", WholeImageTransform(W), labels=store)  # output 160 x 160: 10 x 10
    targets = build_targets(collate_samples([dataset[0]]), 2, smoothing=0.0, method="dense")
    return targets.tokens[0].argmax(dim=-1).reshape(10, 10)


def _expected():
    """Tokens whose centre is inside the labelled square, at least one map cell (12 px) from any class edge."""
    cell = SIDE / MAP
    rows, cols = [], []
    for r in range(10):
        for c in range(10):
            x, y = (c + 0.5) * W / 10, (r + 0.5) * H / 10
            inside = X0 + cell <= x <= X0 + SIDE - cell and Y0 + cell <= y <= Y0 + SIDE - cell
            edge = min(abs(x - OBJECT[2]), abs(y - OBJECT[3]))
            if inside and edge >= cell:
                rows.append((r, c))
                cols.append(int(OBJECT[0] <= x < OBJECT[2] and OBJECT[1] <= y < OBJECT[3]))
    return rows, cols


def test_centre_crop_label_file_lines_up_with_the_image(tmp_path):
    _write(tmp_path)
    points, want = _expected()
    assert len(points) >= 6 and 0 < sum(want) < len(want)  # both classes are checked
    folded = _token_classes(tmp_path, CROP)
    assert [int(folded[r, c]) for r, c in points] == want
    whole = _token_classes(tmp_path, None)  # the original code's reading: the map stretched over the whole image
    wrong = sum(int(whole[r, c]) != w for (r, c), w in zip(points, want))
    assert wrong >= 1


def test_fold_is_the_centre_square_in_normalised_coordinates():
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    folded = fold_centre_crop(identity, W, H, CROP)
    # the crop's corner (x = X0, y = Y0 in pixels) is map coordinate (-1, -1)
    x = 2 * X0 / W - 1
    y = 2 * Y0 / H - 1
    torch.testing.assert_close(folded @ torch.tensor([x, y, 1.0]), torch.tensor([-1.0, -1.0]))


def test_imagenet_subset_class_map(tmp_path):
    """Released-style ids are ImageNet-1k indices: mapped onto two wnid folders, others dropped harmlessly."""
    pytest.importorskip("timm")
    from volo.labeling.classmap import imagenet_class_map

    classes = ["n01440764", "n02102040", "n02979186"]  # ImageNet ids 0, 217, 482
    assert imagenet_class_map(classes) == [0, 217, 482]
    d = tmp_path / "labels" / "n01440764"
    d.mkdir(parents=True)
    ids = torch.tensor([482.0, 5.0]).reshape(2, 1, 1).expand(2, 2, 2)  # top-1 class 482, then a non-subset class
    values = torch.tensor([4.0, 3.0]).reshape(2, 1, 1).expand(2, 2, 2)
    torch.save(torch.stack([values, ids]).half(), d / "a.pt")
    store = PublicLabelStore(tmp_path / "labels", classes=classes)
    assert store.num_classes == 3
    label = store.get("n01440764/a.JPEG")
    assert (label.ids[0] == 2).all() and (label.values[0] == 4).all()  # 482 -> dataset class 2
    assert (label.values[1] == 0).all() and not (label.ids[1] == 2).any()  # class 5 dropped: 0 on an absent class
    with pytest.raises(VoloError, match="more classes than the top-k"):
        PublicLabelStore(tmp_path / "labels", classes=classes[:2])
