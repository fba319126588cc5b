"""Every range check of the config, at its edges: the first value outside is refused with a one-line error naming
the key, the last value inside is accepted. A check added to volo/training/config_checks.py without a row here
fails `test_every_range_check_has_a_case`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from volo.errors import VoloError
from volo.training.config import load_config

# key: (values refused, values accepted); the base is the debug recipe (img_size 64, 4 epochs), token labels off
CASES: dict[str, tuple[list[str], list[str]]] = {
    "model.img_size": (["200", "0", "-16", "2064", "100000"], ["48", "16", "2048"]),
    "model.num_classes": (["0"], ["1"]),
    "model.drop_path_rate": (["1.0", "-0.01"], ["0.0", "0.99"]),
    "model.drop_rate": (["1.0", "-0.01"], ["0.0", "0.99"]),
    "data.workers": (["-1", "257", "1000000"], ["0", "256"]),
    "data.loader": (["fast"], ["pytorch"]),
    "data.loader_device": (["gpu", "cuda:x", "cuda:-1"], ["null", "cpu", "cuda", "cuda:1"]),
    "data.reprob": (["1.01", "-0.01"], ["0.0", "1.0"]),
    "data.hflip": (["1.01", "-0.01"], ["0.0", "1.0"]),
    "data.scale_min": (["0.0", "1.01"], ["0.01", "1.0"]),
    "data.eval_crop_pct": (["0.0", "1e-9", "0.49", "2.01", "nan"], ["null", "0.5", "2.0"]),
    "data.eval_batch_size": (["0"], ["1"]),
    "data.max_train_images": (["0"], ["null", "1"]),
    "data.max_val_images": (["0"], ["null", "1"]),
    "token_labels.size": (["3", "5"], ["null", "4"]),
    "token_labels.dense_weight": (["-0.01"], ["0.0"]),
    "token_labels.cls_weight": (["-0.01"], ["0.0"]),
    "token_labels.label_smoothing": (["1.0", "-0.01"], ["0.0", "0.99"]),
    "token_labels.public_crop_pct": (["0.0", "2.01"], ["null", "0.01", "2.0"]),
    "token_labels.class_map": (["wnid"], ["null", "imagenet"]),
    "optim.lr_base": (["0.0", "-1e-3", "inf", "nan", "1e300", "1.01"], ["1e-9", "1.0"]),
    "optim.weight_decay": (["-1e-9"], ["0.0"]),
    "optim.betas": (["[0.9, 1.0]", "[-0.1, 0.9]", "[0.9]"], ["[0.0, 0.999]"]),
    "optim.eps": (["0.0", "inf", "nan", "0.011"], ["1e-12", "0.01"]),
    "schedule.epochs": (["0"], ["1"]),
    "schedule.warmup_epochs": (["-1", "5"], ["0", "4"]),
    "schedule.warmup_lr": (["-1e-9", ".inf", "inf", "nan", "1.01"], ["0.0", "1.0"]),
    "schedule.min_lr": (["-1e-9", "inf", "nan", "1.01"], ["0.0", "1.0"]),
    "schedule.cooldown_epochs": (["-1"], ["0"]),
    "schedule.shape": (["cosine", "epoch"], ["step", "reference"]),
    "train.batch_size": (["0"], ["1"]),
    "train.accumulation": (["0"], ["1"]),
    "train.amp": (["fp8"], ["bf16", "fp16", "none"]),
    "train.compile_mode": (["fast"], ["default", "reduce-overhead"]),
    "train.ema_decay": (["0.0", "1.0"], ["0.5"]),
    "train.clip_grad": (["0.0", "-1.0"], ["null", "1e-6"]),
    "train.log_every": (["0"], ["1"]),
    "train.max_bad_steps": (["0"], ["1"]),
    "train.max_steps": (["0"], ["null", "1"]),
    "checkpoint.keep_last": (["0"], ["1"]),
    "checkpoint.every_steps": (["-1"], ["0"]),
    "checkpoint.eval_every": (["0"], ["1"]),
    "checkpoint.milestones": (["[0]", "[2, 0]"], ["[]", "[1, 3]"]),
    "checkpoint.run_name": (["../../..", "..", "a/b", "/abs", ".hidden", "a..b", "x" * 201], ["run-1.a_b", "x" * 200]),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_range_check_edges(key):
    refused, accepted = CASES[key]
    for value in refused:
        with pytest.raises(VoloError, match=rf"^Config value {re.escape(key)}=.* (is out of range|is unknown)") as e:
            load_config("debug", ["token_labels.size=null", f"{key}={value}"])
        assert "\n" not in str(e.value)
    for value in accepted:
        load_config("debug", ["token_labels.size=null", f"{key}={value}"])


def test_every_range_check_has_a_case():
    source = (Path(__file__).parents[1] / "volo" / "training" / "config_checks.py").read_text()
    keys = set(re.findall(r'"((?:model|data|token_labels|optim|schedule|train|checkpoint)\.\w+)"', source))
    keys |= {f"data.{k}" for k in re.findall(r'"(max_\w+_images)"', source)}
    assert len(keys) >= 35
    assert keys <= set(CASES), f"range checks without a case here: {sorted(keys - set(CASES))}"
