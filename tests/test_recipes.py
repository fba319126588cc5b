"""Every shipped recipe is complete, valid, and builds its model (on the meta device: no memory, no time)."""

import pytest
import torch
import yaml

from volo.errors import VoloError
from volo.models import create_model
from volo.models.variants import VARIANTS
from volo.training.config import is_complete, list_recipes, load_config, recipe_path
from volo.training.config_checks import check_peak_lr, warn_plain_production
from volo.training.data import model_eval_config
from volo.training.optim import BatchGeometry, scaled_lr
from volo.training.schedule import build_schedule

EXPECTED = {  # recipe: (model, img_size, params from volo-reference.md where it gives them)
    "d1_224": ("volo_d1", 224, 26_632_040),
    "d2_224": ("volo_d2", 224, 58_678_336),
    "d3_224": ("volo_d3", 224, 86_325_072),
    "d4_224": ("volo_d4", 224, 192_961_520),
    "d5_224": ("volo_d5", 224, 295_455_584),
    "d1_384": ("volo_d1", 384, 26_777_960),
    "d2_384": ("volo_d2", 384, None),
    "d3_448": ("volo_d3", 448, None),
    "d4_448": ("volo_d4", 448, None),
    "d5_448": ("volo_d5", 448, 295_907_168),
    "d5_512": ("volo_d5", 512, 296_091_488),
    "debug": ("volo_tiny", 64, None),
}


def test_all_recipes_present():
    assert set(list_recipes()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_loads_complete_and_builds_on_meta(name):
    raw = yaml.safe_load(recipe_path(name).read_text())
    assert is_complete(raw) == [], f"{name} does not list every config field"
    cfg = load_config(name)
    model_name, size, params = EXPECTED[name]
    assert (cfg.model.name, cfg.model.img_size) == (model_name, size)
    assert cfg.token_labels.size in (None, size // 16)
    with torch.device("meta"):
        model = create_model(
            cfg.model.name,
            img_size=cfg.model.img_size,
            num_classes=cfg.model.num_classes,
            drop_path_rate=cfg.model.drop_path_rate,
        )
    assert model.pos_embed.shape[1] == size // 16
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == params


def test_recipe_values_from_the_reference():
    d1 = load_config("d1_224")
    assert (d1.optim.lr_base, d1.optim.weight_decay, d1.schedule.epochs, d1.schedule.warmup_epochs) == (
        1.6e-3,
        0.05,
        300,
        20,
    )
    assert (d1.schedule.warmup_lr, d1.schedule.min_lr, d1.schedule.cooldown_epochs) == (1e-6, 1e-5, 10)
    assert d1.data.rand_augment == "rand-m9-mstd0.5-inc1" and d1.data.reprob == 0.25
    assert d1.token_labels.dense_weight == 0.5 and d1.token_labels.mixtoken
    assert [load_config(f"d{i}_224").model.drop_path_rate for i in range(1, 6)] == [0.1, 0.2, 0.5, 0.5, 0.75]
    # 8 GPUs with the recipe's per-GPU batch and accumulation give the reference global batch of 1024
    for i in range(1, 6):
        c = load_config(f"d{i}_224")
        assert BatchGeometry(8, c.train.batch_size, c.train.accumulation).global_batch == 1024
    # fine-tunes: README's lr 8e-6 at its global batch (512 / 384 / 240 on 8 GPUs), ground truth, wd 1e-8
    for name, batch in (("d1_384", 512), ("d2_384", 384), ("d3_448", 240)):
        c = load_config(name)
        g = BatchGeometry(8, c.train.batch_size, c.train.accumulation)
        assert g.global_batch == batch
        assert scaled_lr(c.optim.lr_base, g) == pytest.approx(8e-6, rel=1e-4)
        assert c.token_labels.ground_truth and c.optim.weight_decay == 1e-8 and c.schedule.epochs == 30
        assert c.model.init_checkpoint.endswith(f"{name[:2]}_224/weights/best.safetensors")


def test_d5_224_lr_is_the_released_figure():
    """The write-up's D5 command: lr 1e-4 (absolute) at 8 GPUs x 44 images = 352."""
    c = load_config("d5_224")
    assert c.optim.lr_base == pytest.approx(1e-4 * 1024 / 352, rel=1e-6)
    assert scaled_lr(c.optim.lr_base, BatchGeometry(8, 44, 1)) == pytest.approx(1e-4, rel=1e-6)
    text = recipe_path("d5_224").read_text()
    assert "8.0e-4" in text and "1e-4" in text and "352" in text  # names the disagreeing figures


def test_large_fine_tunes_rescaled_from_the_write_up():
    """d5_512 at the write-up's 8 GPUs x 4 peaks at its 2.3e-5; d4_448 / d5_448 use the same per-1024 figure."""
    c = load_config("d5_512")
    assert scaled_lr(c.optim.lr_base, BatchGeometry(8, c.train.batch_size, 1)) == pytest.approx(2.3e-5, rel=1e-6)
    assert (c.schedule.min_lr, c.schedule.warmup_lr) == (1e-5, 1e-6)  # main.py's defaults
    for name in ("d4_448", "d5_448", "d5_512"):
        c = load_config(name)
        assert c.optim.lr_base == pytest.approx(2.3e-5 * 1024 / 32, rel=1e-6)
        assert c.token_labels.ground_truth and c.optim.weight_decay == 1e-8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_lr_curve_peaks_above_its_floors_and_decays(name):
    """On the recipe's own 8 GPUs (the debug recipe: 1 process) the peak is >= min_lr and warmup_lr, the LR never
    rises after the warmup, and it ends at min_lr."""
    c = load_config(name)
    g = BatchGeometry(1 if name == "debug" else 8, c.train.batch_size, c.train.accumulation)
    peak = scaled_lr(c.optim.lr_base, g)
    check_peak_lr(c, peak, g.global_batch)
    for shape in ("step", "reference"):
        c.schedule.shape = shape
        s = build_schedule(c.schedule, peak, steps_per_epoch=3)
        after = [s(i) for i in range(s.warmup_steps, s.total_steps)]
        assert max(after) <= peak and min(after) >= c.schedule.min_lr
        assert all(a >= b for a, b in zip(after, after[1:])), f"{name} ({shape}) rises after its warmup"
        assert s(s.cosine_end) == c.schedule.min_lr


def test_d1_224_lr_at_named_steps():
    """d1_224 at 8 x 128 = 1024, 1251 steps per epoch (ImageNet-1k): the reference's values."""
    c = load_config("d1_224")
    peak = scaled_lr(c.optim.lr_base, BatchGeometry(8, c.train.batch_size, c.train.accumulation))
    assert peak == pytest.approx(1.6e-3)
    spe = 1251
    s = build_schedule(c.schedule, peak, spe)
    assert s(0) == 1e-6 and s(20 * spe) == pytest.approx(1.6e-3)
    assert s(160 * spe) == pytest.approx(1e-5 + 0.5 * (1.6e-3 - 1e-5), rel=1e-12)  # half-way: epoch 20 + 280 / 2
    c.schedule.shape = "reference"
    r = build_schedule(c.schedule, peak, spe)
    assert r(10 * spe + 5) == pytest.approx(1e-6 + 10 * (1.6e-3 - 1e-6) / 20)
    assert r(150 * spe) == pytest.approx(1e-5 + 0.5 * (1.6e-3 - 1e-5), rel=1e-12)  # cosine over all 300 epochs
    assert r(305 * spe) == 1e-5


def test_peak_below_floor_is_refused():
    c = load_config("d1_384")
    with pytest.raises(VoloError, match="below schedule.min_lr"):
        check_peak_lr(c, 2e-6, 32)
    c.schedule.min_lr = 0.0
    with pytest.raises(VoloError, match="below schedule.warmup_lr"):
        check_peak_lr(c, 5e-7, 32)


def test_schedule_shape_is_checked():
    with pytest.raises(VoloError, match="schedule.shape"):
        load_config("debug", ["schedule.shape=cosine"]).validate()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_in_run_eval_settings_equal_volo_eval(name):
    """One source of eval settings: the recipe leaves eval_crop_pct to the model, whose table `volo eval` reads."""
    c = load_config(name)
    assert c.data.eval_crop_pct is None
    in_run = model_eval_config(c.model.name, c.model.img_size)
    assert in_run == VARIANTS[c.model.name].eval_cfg(c.model.img_size)  # what `volo eval` of the weights uses
    if name in ("d4_224", "d5_224", "d4_448", "d5_448", "d5_512"):
        assert in_run.crop_pct == 1.15


def test_production_recipe_without_token_labels_warns():
    with pytest.warns(UserWarning, match="plain labels: token_labels.label_root is not set"):
        warn_plain_production(load_config("d1_224"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_plain_production(load_config("d1_224", ["token_labels.label_root=/labels"]))
        warn_plain_production(load_config("debug"))
