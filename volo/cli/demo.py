"""`volo demo`: the whole system in miniature, on a dataset it generates, in a few minutes on 2 CPU cores.

Stages (each the same code a real run uses, pointed at a generated ImageFolder):
  1. data      generate train/ and val/ JPEG folders of off-centre coloured shapes (volo/data/synthetic.py)
  2. teacher   train a CNN teacher (timm's test_resnet) at a higher resolution on plain labels, pooled head only,
               so its classifier applied per location follows the object (volo train --set model.name=timm:...)
  3. label     run the teacher's per-location classifier over the training set (volo label; teacher quality)
  4. baseline  pretrain a student at low resolution on plain labels (no teacher), one run per seed
  5. student   pretrain the same student with token labeling and MixToken, the same seeds and epochs
  6. finetune  fine-tune the first token-labeled student at a higher resolution (pos_embed resized, ground truth)
  7. eval      evaluate every student on val/ (volo eval) and print mean +- spread over the seeds per arm
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from volo.cli.paths import require_output_dir
from volo.errors import VoloError

SIZES = {  # classes, images per class (train, val), teacher / student / fine-tune epochs, training seeds per arm
    # 600 val images: one image is 0.17 points
    "default": dict(
        classes=6, train_per_class=80, val_per_class=100, teacher_epochs=20, epochs=20, finetune_epochs=5, seeds=3
    ),
    "small": dict(
        classes=4, train_per_class=12, val_per_class=6, teacher_epochs=1, epochs=1, finetune_epochs=1, seeds=2
    ),
}
TEACHER = "timm:test_resnet"
"""A small CNN (0.4 M parameters, stride 32); at 128 px its per-location classifier gives 4 x 4 maps."""


@dataclass
class StageResult:
    stage: str
    seconds: float
    detail: str = ""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline in miniature on a generated dataset (no download)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for data, runs and labels")
    p.add_argument("--size", choices=sorted(SIZES), default="default", help="'small' is the test-sized run")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated dataset (default 0)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="run the same stages on a real ImageFolder with train/ and val/ instead of the generated one",
    )
    p.add_argument("--max-images", type=int, default=None, help="use at most this many training images per stage")
    p.add_argument("--teacher-size", type=int, default=128, help="teacher resolution (px)")
    p.add_argument("--low-res", type=int, default=64, help="student pretraining resolution (px)")
    p.add_argument("--high-res", type=int, default=96, help="student fine-tuning resolution (px)")
    p.set_defaults(func=run)


def _train(recipe_overrides: list[str], out: Path, name: str, data: Path, progress: bool):
    """`volo train debug --data DATA --out OUT/runs --name NAME --set ...`, run in this process."""
    from volo.training.config import load_config
    from volo.training.trainer import train

    print(
        f"$ volo train debug --data {data} --out {out / 'runs'} --name {name} "
        + " ".join(f"--set {o}" for o in recipe_overrides),
        flush=True,
    )
    overrides = [
        f"data.path={data}",
        f"checkpoint.output_dir={out / 'runs'}",
        f"checkpoint.run_name={name}",
        f"train.progress={str(progress).lower()}",
        *recipe_overrides,
    ]
    return train(load_config("debug", overrides), overwrite=True)  # a rerun of the demo starts each stage afresh


def run(args: argparse.Namespace) -> int:
    from volo.data.synthetic import make_synthetic_dataset
    from volo.labeling.generate import GenerateConfig, generate_labels
    from volo.labeling.teacher import load_teacher

    size = SIZES[args.size]
    out: Path = require_output_dir(args.out, "--out")
    data = args.data or out / "data"
    results: list[StageResult] = []
    progress = args.size != "small"
    if args.data is None:
        classes = size["classes"]
    elif not ((data / "train").is_dir() and (data / "val").is_dir()):
        raise VoloError(f"--data {data} needs train/ and val/ ImageFolder splits (one sub-folder per class).")
    else:
        classes = sum(1 for p in (data / "train").iterdir() if p.is_dir())

    def stage(name: str):
        print(f"\n== volo demo: {name} ==", flush=True)
        return time.perf_counter()

    def train_stage(key: str, title: str, run_name: str, overrides: list[str], detail: str):
        t = stage(title)
        result = _train(overrides, out, run_name, data, progress)
        results.append(StageResult(key, time.perf_counter() - t, detail))
        return result

    t = stage("data")
    if not (data / "val").is_dir():
        make_synthetic_dataset(data / "train", classes, size["train_per_class"], size=112, seed=args.seed)
        make_synthetic_dataset(data / "val", classes, size["val_per_class"], size=112, seed=args.seed + 1000)
    n_train = sum(1 for p in (data / "train").rglob("*") if p.is_file())
    results.append(StageResult("data", time.perf_counter() - t, detail=f"{n_train} train files, {classes} classes"))

    common = [f"model.num_classes={classes}", "data.rand_augment=rand-m9-mstd0.5-inc1", "data.reprob=0.25"]
    if args.max_images:
        common += [f"data.max_train_images={args.max_images}", f"data.max_val_images={args.max_images}"]
    try:
        import timm  # noqa: F401
    except ImportError:
        raise VoloError(
            "The demo's teacher is a timm CNN; install timm (`pip install timm`, or `make demo`)."
        ) from None
    teacher = train_stage(
        "teacher",
        "teacher",
        "teacher",
        [
            *common,
            f"model.name={TEACHER}",
            f"model.img_size={args.teacher_size}",
            f"schedule.epochs={size['teacher_epochs']}",
            f"token_labels.size={args.teacher_size // 16}",
            "token_labels.mixtoken=false",
            "token_labels.dense_weight=0",  # a dense loss on plain labels would teach every cell the image class
            "checkpoint.eval_every=1000",  # evaluated once, after the last epoch
        ],
        f"{TEACHER.removeprefix('timm:')} @{args.teacher_size}, plain labels, pooled head",
    )

    t = stage("label")
    labels = out / "labels"
    print(f"$ volo label --data {data / 'train'} --teacher {teacher.final_weights} --out {labels}", flush=True)
    report = generate_labels(
        GenerateConfig(
            data=data / "train", out=labels, topk=min(5, classes), batch_size=32, num_workers=0, progress=progress
        ),
        load_teacher(str(teacher.final_weights)),
    )
    q = report.quality or {}
    quality = (
        f"pooled map agrees with the folder label on {q.get('pooled_agreement_pct') or 0:.1f}%, "
        f"{q.get('varying_maps_pct', 0):.0f}% of maps vary across cells, entropy {q.get('mean_target_entropy', 0):.2f}"
    )
    results.append(StageResult("label", time.perf_counter() - t, detail=f"{report.images} images; {quality}"))

    low = [
        *common,
        f"model.img_size={args.low_res}",
        f"schedule.epochs={size['epochs']}",
        f"token_labels.size={args.low_res // 16}",
        "checkpoint.eval_every=1000",
    ]
    seeds = [args.seed + i for i in range(size["seeds"])]
    arms: dict[str, list] = {"baseline": [], "student": []}
    for key, title, name, extra, what in (
        ("baseline", "baseline (plain labels)", "student_plain", [], "plain labels"),
        ("student", "student (token labeling)", "student_tl", [f"token_labels.label_root={labels}"], "token labels"),
    ):
        t = stage(f"{title}, seeds {seeds}")
        for seed in seeds:
            arms[key].append(_train([*low, *extra, f"train.seed={seed}"], out, f"{name}_s{seed}", data, progress))
        detail = f"volo_tiny @{args.low_res}, {what} + MixToken, {len(seeds)} seeds"
        results.append(StageResult(key, time.perf_counter() - t, detail))
    fine = train_stage(
        "finetune",
        "fine-tune at high resolution",
        "student_tl_finetune",
        [
            *common,
            f"model.img_size={args.high_res}",
            f"model.init_checkpoint={arms['student'][0].final_weights}",
            f"schedule.epochs={size['finetune_epochs']}",
            "schedule.warmup_epochs=0",
            "optim.lr_base=0.005",
            "optim.weight_decay=1e-8",
            f"token_labels.size={args.high_res // 16}",
            f"token_labels.label_root={labels}",
            "token_labels.ground_truth=true",
            "checkpoint.eval_every=1000",
        ],
        f"volo_tiny @{args.high_res} from the first student",
    )

    # Every run evaluated itself on all of val/ after its last epoch; under one process or DDP that equals
    # `volo eval` of its exported weights (tests/test_ddp.py), so the numbers are read from the runs.
    top1 = {"teacher": [teacher.metrics["top1"]], "finetune": [fine.metrics["top1"]]}
    top1.update({key: [r.metrics["top1"] for r in runs] for key, runs in arms.items()})
    n_val = teacher.metrics["val_images"]

    print(f"\nvolo demo: summary ({n_val} val images: one image is {100 / n_val:.2f} points)")
    print(f"{'stage':<10} {'seconds':>8} {'val top-1':>16}  detail")
    for r in results:
        cell = _mean_spread(top1[r.stage]) if r.stage in top1 else "-"
        print(f"{r.stage:<10} {r.seconds:>8.1f} {cell:>16}  {r.detail}")
    gain = _mean(top1["student"]) - _mean(top1["baseline"])
    print(
        f"\nwith token labels: {_mean_spread(top1['student'])} top-1; without: {_mean_spread(top1['baseline'])} "
        f"(mean +- sd over seeds {seeds}; same student, same epochs, @{args.low_res}); difference {gain:+.1f} "
        f"points; teacher {top1['teacher'][0]:.1f}%; after fine-tuning @{args.high_res}: {top1['finetune'][0]:.1f}%"
    )
    print("per seed: " + "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in top1[k])}" for k in ("baseline", "student")))
    runs = (teacher, *arms["baseline"], *arms["student"], fine)
    plots = [p for res in runs for p in res.plots]
    print("plots:\n" + "\n".join(f"  {p}" for p in plots))
    summary = {
        r.stage: {
            "seconds": r.seconds,
            "top1": _mean(top1[r.stage]) if r.stage in top1 else None,
            "top1_sd": _sd(top1[r.stage]) if r.stage in top1 else None,
            "top1_runs": top1.get(r.stage),
            "detail": r.detail,
        }
        for r in results
    }
    summary["teacher_quality"] = q
    summary["val_images"] = n_val
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _sd(values: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _mean_spread(values: list[float]) -> str:
    return f"{_mean(values):.1f}%" if len(values) == 1 else f"{_mean(values):.1f} +- {_sd(values):.1f}%"
