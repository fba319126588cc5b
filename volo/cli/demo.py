"""`volo demo`: the whole system in miniature, on a dataset it generates, in a few minutes on 2 CPU cores.

Stages (each the same code a real run uses, pointed at a generated ImageFolder):
  1. data      generate train/ and val/ JPEG folders of off-centre coloured shapes (volo/data/synthetic.py)
  2. teacher   train a teacher VOLO on plain labels (volo train)
  3. label     run the teacher over the training set into a token-label store (volo label)
  4. baseline  pretrain a student at low resolution on plain labels (no teacher), for comparison
  5. student   pretrain the same student with token labeling and MixToken at low resolution
  6. finetune  fine-tune the token-labeled student at a higher resolution (pos_embed resized, ground-truth option)
  7. eval      evaluate every model on val/ (volo eval) and print a summary table with the plots' paths
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from volo.cli.paths import require_output_dir
from volo.errors import VoloError

SIZES = {  # name: classes, train images per class, val images per class, teacher/student epochs, fine-tune epochs
    "default": dict(classes=6, train_per_class=80, val_per_class=25, teacher_epochs=30, epochs=20, finetune_epochs=5),
    "small": dict(classes=4, train_per_class=12, val_per_class=6, teacher_epochs=1, epochs=1, finetune_epochs=1),
}


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
    p.add_argument("--teacher-size", type=int, default=96, help="teacher resolution (px)")
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
    from volo.distributed.process_group import DistInfo, select_device
    from volo.labeling.generate import GenerateConfig, generate_labels
    from volo.labeling.teacher import load_teacher
    from volo.training.inference import evaluate_checkpoint

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
    teacher = train_stage(
        "teacher",
        "teacher",
        "teacher",
        [
            *common,
            f"model.img_size={args.teacher_size}",
            f"schedule.epochs={size['teacher_epochs']}",
            f"token_labels.size={args.teacher_size // 16}",
            "token_labels.mixtoken=false",
        ],
        f"volo_tiny @{args.teacher_size}, plain labels",
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
    results.append(
        StageResult(
            "label",
            time.perf_counter() - t,
            detail=f"{report.images} images -> {labels} ({args.teacher_size // 16}^2 maps)",
        )
    )

    low = [
        *common,
        f"model.img_size={args.low_res}",
        f"schedule.epochs={size['epochs']}",
        f"token_labels.size={args.low_res // 16}",
    ]
    baseline = train_stage(
        "baseline",
        "baseline (plain labels)",
        "student_plain",
        low,
        f"volo_tiny @{args.low_res}, plain labels + MixToken",
    )
    student = train_stage(
        "student",
        "student (token labeling)",
        "student_tl",
        [*low, f"token_labels.label_root={labels}"],
        f"volo_tiny @{args.low_res}, token labels + MixToken",
    )
    fine = train_stage(
        "finetune",
        "fine-tune at high resolution",
        "student_tl_finetune",
        [
            *common,
            f"model.img_size={args.high_res}",
            f"model.init_checkpoint={student.final_weights}",
            f"schedule.epochs={size['finetune_epochs']}",
            "schedule.warmup_epochs=0",
            "optim.lr_base=0.005",
            "optim.weight_decay=1e-8",
            f"token_labels.size={args.high_res // 16}",
            f"token_labels.label_root={labels}",
            "token_labels.ground_truth=true",
        ],
        f"volo_tiny @{args.high_res} from the student",
    )

    t = stage("eval")
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=select_device(0), backend=None)
    evals = {}
    for name, res in (("teacher", teacher), ("baseline", baseline), ("student", student), ("finetune", fine)):
        print(f"$ volo eval {res.final_weights} --data {data / 'val'}", flush=True)
        evals[name] = evaluate_checkpoint(res.final_weights, data / "val", dist, batch_size=64, workers=0)
    results.append(StageResult("eval", time.perf_counter() - t, detail=f"{len(evals)} models on val/"))

    print("\nvolo demo: summary")
    print(f"{'stage':<10} {'seconds':>8} {'val top-1':>10}  detail")
    for r in results:
        top1 = f"{evals[r.stage].top1:.1f}%" if r.stage in evals else "-"
        print(f"{r.stage:<10} {r.seconds:>8.1f} {top1:>10}  {r.detail}")
    print(
        f"\nwith token labels: {evals['student'].top1:.1f}% top-1; without: {evals['baseline'].top1:.1f}% "
        f"(same student, same epochs, @{args.low_res}); after fine-tuning @{args.high_res}: "
        f"{evals['finetune'].top1:.1f}%"
    )
    plots = [p for res in (teacher, baseline, student, fine) for p in res.plots]
    print("plots:\n" + "\n".join(f"  {p}" for p in plots))
    summary = {
        r.stage: {"seconds": r.seconds, "top1": evals[r.stage].top1 if r.stage in evals else None, "detail": r.detail}
        for r in results
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return 0
