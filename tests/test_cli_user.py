"""The command line as a new user meets it: fast `--help` (no torch import), `--version`, a help text for every
command and flag, folders and globs for `volo predict`, worker counts capped at the usable CPUs, `volo bench`
writing where it is run, `volo label` refusing a dataset root and clamping --topk, `volo eval --out` reports."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import pytest

from volo.cli.main import build_parser, main
from volo.errors import VoloError

COMMANDS = ("demo", "train", "eval", "predict", "label", "bench", "slurm", "bind", "plan")


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "import volo.cli.main as m\n"
        "assert 'torch' not in sys.modules, 'import volo.cli.main imported torch'\n"
        "for argv in (['--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try: m.main(argv)\n"
        "        except SystemExit: pass\n"
        "    print(out.getvalue())\n"
        "print('torch' in sys.modules, sorted(k for k in sys.modules if k.startswith('volo.cli.')))\n"
    )
    out = run_python(code)
    assert "volo 0.1.0" in out and "predict" in out and "Python API" in out
    assert out.strip().splitlines()[-1] == "False ['volo.cli.main']"  # no command module, no torch


def test_eval_predict_label_help_imports_no_torch_either():
    code = (
        "import sys, contextlib, io\n"
        "import volo.cli.main as m\n"
        "for cmd in ('eval', 'predict', 'label'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: m.main([cmd, '--help'])\n"
        "        except SystemExit: pass\n"
        "print('torch' in sys.modules)\n"
    )
    assert run_python(code).strip() == "False"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_has_help_and_every_command_a_description(command):
    sub = subparsers()[command]
    assert sub.description
    no_help = [a.dest for a in sub._actions if not a.help and a.dest != "help"]
    assert no_help == []


def test_label_help_shows_which_flags_are_required(capsys):
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = capsys.readouterr().out
    assert text.index("required to generate labels") < text.index("  --data DATA")


def test_predict_accepts_folders_recursively_and_globs(tmp_path):
    from volo.cli.predict import expand_images

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.jpg", "a/b/y.png", "a/notes.txt", "z.JPEG"):
        (tmp_path / name).write_bytes(b"")
    assert expand_images([str(tmp_path / "a")]) == [tmp_path / "a/b/y.png", tmp_path / "a/x.jpg"]
    assert expand_images([str(tmp_path / "**" / "*.jpg")]) == [tmp_path / "a/x.jpg"]
    assert expand_images([str(tmp_path / "z.JPEG")]) == [tmp_path / "z.JPEG"]
    with pytest.raises(VoloError, match="matches no files"):
        expand_images([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VoloError, match="holds no image files"):
        expand_images([str(tmp_path / "empty")])


def test_workers_capped_at_the_cpus_this_process_may_use(monkeypatch):
    import warnings

    from volo.data import workers
    from volo.data.loader import LoaderConfig, build_loader

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert workers.usable_cpus() == 1 and workers.cap_workers(8) == 1 and workers.cap_workers(0) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "suggested max number of worker" warning would fail here
        loader = build_loader(list(range(4)), LoaderConfig(batch_size=2))  # default 8 workers
    assert loader.num_workers == 1
    assert next(a.default for a in subparsers()["eval"]._actions if a.dest == "workers") == 1


def test_bench_writes_into_the_current_directory_by_default(tmp_path, monkeypatch):
    from volo.cli.bench import load_script

    bench = load_script("bench_model")
    seen = []
    monkeypatch.setattr(bench, "run", lambda cfg: seen.append(cfg.out))
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--models", "volo_tiny"]) == 0
    assert seen == [tmp_path / "volo_bench_model.md"]


def test_label_refuses_a_dataset_root_and_clamps_topk(tmp_path, capsys):
    from volo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data" / "train", classes=2, per_class=2, size=32, seed=0)
    make_synthetic_dataset(tmp_path / "data" / "val", classes=2, per_class=1, size=32, seed=1)
    base = ["label", "--teacher", "volo_tiny", "--num-classes", "2", "--input-size", "32", "--workers", "0"]
    assert main([*base, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "s0")]) == 2
    assert f"pass --data {tmp_path / 'data' / 'train'}" in capsys.readouterr().err
    out = tmp_path / "store"
    (out).mkdir()
    (out / "run.json").write_text(json.dumps({"topk": 9}))  # left by a start that failed before any shard
    assert main([*base, "--data", str(tmp_path / "data" / "train"), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "--topk 5 clamped to the teacher's 2 classes" in text
    assert json.loads((out / "run.json").read_text())["topk"] == 2


def test_eval_out_writes_per_class_accuracy_and_a_confusion_matrix(tmp_path, capsys):
    import torch

    from volo.data.synthetic import make_synthetic_dataset
    from volo.models import create_model, save_weights

    make_synthetic_dataset(tmp_path / "val", classes=3, per_class=4, size=40, seed=2)
    classes = sorted(p.name for p in (tmp_path / "val").iterdir())
    torch.manual_seed(0)
    weights = save_weights(create_model("volo_tiny", img_size=32, num_classes=3), tmp_path / "w", {"classes": classes})
    report = tmp_path / "report"
    args = ["eval", str(weights), "--data", str(tmp_path), "--workers", "0", "--batch-size", "5", "--out", str(report)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "per-class top-1 (worst 3 of 3 classes)" in out
    rows = list(csv.DictReader((report / "per_class.csv").open()))
    assert sorted(r["class"] for r in rows) == classes and sum(int(r["images"]) for r in rows) == 12
    summary = json.loads((report / "eval.json").read_text())
    hits = sum(float(r["top1"]) * int(r["images"]) / 100 for r in rows)
    assert hits == pytest.approx(summary["top1"] * 12 / 100)
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_warns_when_folder_names_differ_and_classes_match_by_index(tmp_path):
    from volo.training.inference import LoadedModel, label_map

    loaded = LoadedModel(None, None, ["cat", "dog"], ["cat", "dog"])
    with pytest.warns(UserWarning, match="differ from the model's .* matching classes by index"):
        assert label_map(["n01", "n02"], loaded).tolist() == [0, 1]


def test_progress_bar_and_confusion_counts_of_evaluate(capsys):
    import torch

    from volo.data.batch import Batch, identity_transforms
    from volo.training.evaluate import evaluate

    batches = [Batch(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]), identity_transforms(2))] * 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    res = evaluate(model, batches, torch.device("cpu"), confusion=True, progress=True)
    assert res.confusion.sum() == 6 and res.confusion.shape == (2, 2)
    assert res.per_class_top1()[0] in (0.0, 100.0)
    assert "eval" in capsys.readouterr().err and {"top1", "top5", "loss", "images"} <= res.to_dict().keys()
    assert not {"confusion", "class_names"} & res.to_dict().keys()  # JSON-ready


def test_warnings_print_as_one_line_naming_the_command(tmp_path):
    from volo.data.synthetic import make_synthetic_dataset
    from volo.models import create_model, save_weights

    make_synthetic_dataset(tmp_path / "val", classes=2, per_class=2, size=40, seed=2)
    weights = save_weights(
        create_model("volo_tiny", img_size=32, num_classes=2), tmp_path / "w", {"classes": ["a", "b"]}
    )
    argv = ["eval", str(weights), "--data", str(tmp_path), "--workers", "0", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "volo.cli.main", *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("volo eval: warning: The evaluation folder's class names")
    assert "matching classes by index. If that is wrong, name the folders" in err[0]
