"""The pre-training label check refuses a store whose class list differs from the dataset's, even at the same
count: label ids would silently point at other classes."""

from __future__ import annotations

import json

import pytest

from volo.data.dataset import ImageFolderDataset
from volo.data.synthetic import make_synthetic_dataset
from volo.data.transforms import WholeImageTransform
from volo.errors import VoloError
from volo.labeling.check import check_labels
from volo.labeling.generate import GenerateConfig, generate_labels
from volo.labeling.store import ShardedLabelStore
from volo.labeling.teacher import load_teacher


def test_same_class_count_with_other_class_names_is_refused(tmp_path):
    data = make_synthetic_dataset(tmp_path / "train", classes=3, per_class=2, size=40).root
    cfg = GenerateConfig(data, tmp_path / "s", topk=2, batch_size=4, shard_size=4, num_workers=0, progress=False)
    generate_labels(cfg, load_teacher("volo_tiny", num_classes=3, input_size=32))
    dataset = ImageFolderDataset(data, WholeImageTransform(32))
    assert check_labels(dataset, ShardedLabelStore(tmp_path / "s")).images == 6
    manifest_path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["classes"] == dataset.classes == ["class_00", "class_01", "class_02"]
    # a store made for a dataset with the same number of classes, in another order (id 1 is another class)
    manifest["classes"] = ["class_00", "class_02", "class_01"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(VoloError, match=r"class 1 is 'class_02' in the label store but 'class_01' in"):
        check_labels(ImageFolderDataset(data, WholeImageTransform(32)), ShardedLabelStore(tmp_path / "s"))
