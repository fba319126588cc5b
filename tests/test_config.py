"""The typed config: recipe loading, --set overrides, errors that name the key, range checks, saving."""

import pytest
import yaml

from volo.errors import VoloError
from volo.training.config import RunConfig, apply_override, config_from_dict, load_config, save_config


def test_overrides_are_typed():
    cfg = load_config(
        "d1_224",
        [
            "optim.lr_base=2e-3",
            "train.clip_grad=5",
            "checkpoint.milestones=[1, 2]",
            "train.amp=fp16",
            "data.max_train_images=null",
            "model.init_checkpoint=a/b.pth",
        ],
    )
    assert cfg.optim.lr_base == 2e-3 and isinstance(cfg.optim.lr_base, float)
    assert cfg.train.clip_grad == 5.0 and isinstance(cfg.train.clip_grad, float)
    assert cfg.checkpoint.milestones == [1, 2]
    assert cfg.train.amp == "fp16" and cfg.data.max_train_images is None
    assert cfg.model.init_checkpoint == "a/b.pth"
    assert cfg.recipe == "d1_224"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=1", "unknown key optim.lr; valid keys of optim: lr_base, weight_decay"),
        ("optim.lr_base=fast", "optim.lr_base must be a number"),
        ("train.batch_size=1.5", "train.batch_size must be an integer"),
        ("train.ema=maybe", "train.ema must be true/false"),
        ("bogus.x=1", "unknown section 'bogus'"),
        ("optim.lr_base", "is not of the form section.key=value"),
        ("optim.lr_base=-1e-3", "optim.lr_base=-0.001 is out of range"),
        ("train.amp=fp8", "train.amp='fp8' is out of range: it must be one of bf16, fp16, none"),
        ("train.compile_mode=fast", "compile_mode=.fast. is out of range: it must be one of default, reduce-overhead"),
        ("model.img_size=200", "model.img_size=200 is out of range: it must be a positive multiple of 16"),
        ("token_labels.size=24", "token_labels.size=24 is out of range"),
        ("schedule.warmup_epochs=400", "schedule.warmup_epochs=400 is out of range"),
    ],
)
def test_bad_overrides_are_sentences(override, message):
    with pytest.raises(VoloError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config("d1_224", [override])


def test_unknown_recipe_and_keys(tmp_path):
    with pytest.raises(VoloError, match="Unknown recipe 'd9_224'; choose one of d1_224"):
        load_config("d9_224")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: volo_d1, imgsize: 224}\n")
    with pytest.raises(VoloError, match="unknown key model.imgsize; valid keys of model: name, img_size"):
        load_config(bad)
    bad.write_text("modle: {}\n")
    with pytest.raises(VoloError, match="unknown section"):
        load_config(bad)


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config("debug", ["train.seed=7"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load(path.read_text()))
    assert again == cfg and again.train.seed == 7
    assert load_config(path) == cfg  # a saved config is itself a complete recipe
    d = cfg.to_dict()
    assert all(isinstance(v, dict) for k, v in d.items() if k != "recipe")


def test_override_in_place():
    cfg = RunConfig()
    apply_override(cfg, "token_labels.ground_truth=true")
    assert cfg.token_labels.ground_truth is True
