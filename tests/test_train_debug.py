"""A short real training run on a generated JPEG ImageFolder with volo_tiny (token-labeling loss, MixToken, EMA),
then the exported weights through `volo eval` and `volo predict`."""

import json

import pytest

from volo.cli.main import main
from volo.models import create_model
from volo.training.config import load_config
from volo.training.trainer import train


@pytest.mark.timeout(180)
def test_debug_recipe_trains_exports_and_evaluates(tmp_path, capsys):
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data" / "train", classes=4, per_class=8, size=48, seed=0)
    make_synthetic_dataset(tmp_path / "data" / "val", classes=4, per_class=2, size=48, seed=1)
    cfg = load_config(
        "debug",
        [
            "model.num_classes=4",
            "model.img_size=32",
            "token_labels.size=null",
            f"data.path={tmp_path / 'data'}",
            f"checkpoint.output_dir={tmp_path / 'runs'}",
            "train.batch_size=8",
            "schedule.epochs=2",
            "train.log_every=2",
            "train.ema=true",
            "train.ema_decay=0.9",
            "train.clip_grad=1.0",
            "train.progress=false",
        ],
    )
    result = train(cfg)
    run = result.run_dir
    assert run == tmp_path / "runs" / "debug"
    assert result.metrics["steps"] == 8 and result.metrics["epochs"] == 2 and result.metrics["skipped_steps"] == 0
    assert result.metrics["val_images"] == 8 and 0 <= result.metrics["top1"] <= 100
    steps = [json.loads(x) for x in (run / "metrics" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in steps)
    assert (run / "metrics" / "steps.csv").read_text().startswith("step,epoch,lr,loss")
    epochs = [json.loads(x) for x in (run / "metrics" / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and all("ema_top1" in e for e in epochs)
    assert sorted(p.name for p in result.plots) == ["accuracy.png", "loss.png", "lr.png"]
    assert (run / "config.yaml").is_file() and (run / "result.json").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert ckpts == ["best.pt", "epoch0001_step000000004.pt", "epoch0002_step000000008.pt"]
    assert result.ema_weights.name == "final_ema.safetensors"

    # the exports load in the model library, in `volo eval` and in `volo predict`
    model = create_model("auto", num_classes=4, checkpoint=result.final_weights)
    assert model.arch.img_size == 32 and model.arch.num_classes == 4
    assert main(["eval", str(result.final_weights), "--data", str(tmp_path / "data"), "--workers", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 8 and out["top1"] == pytest.approx(result.metrics["top1"])
    image = tmp_path / "data" / "val" / "class_02" / "img_0000.jpg"
    assert main(["predict", str(result.best_weights), str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 5 and "class_0" in lines[1]

    # continuing a finished run with --resume auto changes nothing and keeps the metrics
    again = train(cfg, resume="auto")
    assert again.metrics["steps"] == 8
