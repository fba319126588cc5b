"""Bad and hostile input: each is a one-line error (exit code 2, no traceback) or a counted skip, never silent.

Most cases call the CLI's `main()` in this process (the same code path as the `volo` script, without paying a
Python start-up per case); two cases run the real `volo` executable to pin the exit code and the one-line stderr.
The malicious checkpoint carries a real pickle payload that creates a file when unpickled: it is first shown to
work (a plain `torch.load(weights_only=False)` in a child process creates the file), then every loading path refuses it
and the file never appears.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import TINY, make_data

from volo.cli.main import main
from volo.errors import VoloError
from volo.labeling.store import StoreMeta, write_manifest, write_shard
from volo.models.registry import create_model
from volo.models.weights import read_state_dict, save_weights
from volo.training.checkpoint import Progress, TrainingCheckpoint, load_checkpoint, resolve_resume
from volo.training.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("bad_input"), per_class=4)


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of `volo <argv>` run in this process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_line_error(code: int, lines: list[str], command: str, *fragments: str) -> str:
    # exit 2: refused before anything ran; `volo train` exits 1 for what its run refuses once started (the data,
    # the label store, a checkpoint to resume: volo/training/signals.py)
    assert code == 2 or (command == "train" and code == 1), (code, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"volo {command}: error: ") and "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    print(f"\nRELIABILITY bad-input: {lines[0]}")
    return lines[0]


def train_argv(data: Path, out: Path, *sets: str) -> list[str]:
    argv = ["train", "debug", "--data", data, "--out", out]
    for item in [*TINY, "train.batch_size=8", "schedule.epochs=1", *sets]:
        argv += ["--set", item]
    return argv


# -- configs and hyperparameters -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("train.bogus=1", "unknown key train.bogus; valid keys of train:"),
        ("trian.batch_size=8", "unknown section 'trian'"),
        ("train.batch_size=abc", "train.batch_size must be an integer, got 'abc'"),
        ("train.deterministic=maybe", "train.deterministic must be true/false"),
        ("optim.betas=0.9", "optim.betas must be a list of a number"),
        ("optim.lr_base=-1", "optim.lr_base=-1.0 is out of range: it must be a positive number"),
        ("train.batch_size=0", "train.batch_size=0 is out of range: it must be >= 1"),
        ("model.img_size=65", "model.img_size=65 is out of range: it must be a positive multiple of 16"),
        ("data.reprob=2", "data.reprob=2.0 is out of range: it must be in [0, 1]"),
        ("schedule.warmup_epochs=400", "schedule.warmup_epochs=400 is out of range"),
        ("train.max_bad_steps=0", "train.max_bad_steps=0 is out of range"),
        ("train.batch_size", "is not of the form section.key=value"),
    ],
)
def test_bad_override_is_one_line(capsys, tmp_path: Path, item: str, fragment: str):
    code, lines = cli(capsys, "train", "debug", "--out", tmp_path, "--set", item)
    assert_one_line_error(code, lines, "train", fragment)


def test_recipe_file_with_unknown_or_mistyped_keys(capsys, tmp_path: Path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("train:\n  batch_size: 8\n  warmup: 5\n")
    assert_one_line_error(*cli(capsys, "train", recipe), "train", f"{recipe}: unknown key train.warmup")
    recipe.write_text("model:\n  img_size: [224]\n")
    assert_one_line_error(*cli(capsys, "train", recipe), "train", "model.img_size must be an integer, got [224]")
    recipe.write_text("model: [oops\n")
    assert_one_line_error(*cli(capsys, "train", recipe), "train", "is not valid YAML")
    recipe.write_text("optimizer:\n  lr: 1\n")
    assert_one_line_error(*cli(capsys, "train", recipe), "train", "unknown section(s) ['optimizer']")


def test_real_cli_exit_code_and_single_stderr_line(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "volo.cli.main", "train", "debug", "--set", "train.batch_size=abc"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "volo train: error: --set: train.batch_size must be an integer, got 'abc'."
    ]


# -- dataset files -------------------------------------------------------------------------------------------
def test_corrupt_truncated_empty_and_non_image_files_are_counted_skips(capsys, tmp_path: Path):
    data = make_data(tmp_path / "data", per_class=8)
    train = data / "train" / "class_00"
    good = (train / "img_0000.jpg").read_bytes()
    (train / "img_0001.jpg").write_bytes(os.urandom(3000))  # corrupt: not an image at all
    (train / "img_0002.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (train / "img_0003.jpg").write_bytes(b"")  # empty
    (train / "README.txt").write_text("not an image")  # non-image files are not samples
    (data / "train" / "notes.md").write_text("stray file at class level")
    with pytest.warns(UserWarning) as caught:
        code = main([str(a) for a in train_argv(data, tmp_path / "runs", "train.progress=false")])
    assert code == 0
    notes = [str(w.message) for w in caught]
    for name in ("img_0001.jpg", "img_0002.jpg", "img_0003.jpg"):
        assert any(f"Unreadable image {train / name}" in n for n in notes), (name, notes)
    assert any("skipped 1 non-image file(s)" in n for n in notes), notes
    counts = [int(n.split("(")[-1].split(" unreadable")[0]) for n in notes if "unreadable so far" in n]
    assert counts == sorted(counts) and counts[-1] >= 3  # counted, in order, per process
    capsys.readouterr()


def test_mostly_unreadable_dataset_stops_with_one_line(capsys, tmp_path: Path):
    data = make_data(tmp_path / "data", per_class=8)
    for path in sorted((data / "train").rglob("img_000[0-5].jpg")):
        path.write_bytes(os.urandom(500))
    code, lines = cli(capsys, *train_argv(data, tmp_path / "runs", "train.progress=false"))
    assert_one_line_error(code, lines, "train", "were unreadable", "the dataset looks damaged")


def test_missing_or_empty_dataset(capsys, tmp_path: Path):
    assert_one_line_error(*cli(capsys, *train_argv(tmp_path / "nope", tmp_path)), "train", "does not exist")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    assert_one_line_error(*cli(capsys, *train_argv(tmp_path / "empty", tmp_path)), "train", "No images found")


# -- token-label stores --------------------------------------------------------------------------------------
def _store(root: Path, keys: list[str], num_classes: int) -> Path:
    n, k, h = len(keys), 2, 2
    values = np.random.default_rng(0).normal(size=(n, k, h, h)).astype(np.float16)
    ids = np.random.default_rng(1).integers(0, num_classes, size=(n, k, h, h)).astype(np.int16)
    record = write_shard(root, 0, keys, values, ids, [])
    write_manifest(root, StoreMeta(num_classes, k, (h, h), "test", 32), [record])
    return root


def test_label_store_that_does_not_match_the_dataset(capsys, data: Path, tmp_path: Path):
    keys = sorted(p.relative_to(data / "train").as_posix() for p in (data / "train").rglob("*.jpg"))
    other = _store(tmp_path / "other_classes", keys, num_classes=10)
    code, lines = cli(capsys, *train_argv(data, tmp_path, f"token_labels.label_root={other}"))
    assert_one_line_error(code, lines, "train", "are for 10 classes but the model has 4")
    partial = _store(tmp_path / "partial", keys[:-3], num_classes=4)
    code, lines = cli(capsys, *train_argv(data, tmp_path, f"token_labels.label_root={partial}"))
    assert_one_line_error(code, lines, "train", "no token label", "class_03/img_0001.jpg", "volo label")
    code, lines = cli(capsys, *train_argv(data, tmp_path, f"token_labels.label_root={tmp_path / 'none'}"))
    assert_one_line_error(code, lines, "train", "does not exist; create it with `volo label`")
    (tmp_path / "junk").mkdir()
    code, lines = cli(capsys, *train_argv(data, tmp_path, f"token_labels.label_root={tmp_path / 'junk'}"))
    assert_one_line_error(code, lines, "train", "is not a token-label store")


# -- checkpoints of another model ----------------------------------------------------------------------------
def test_checkpoint_of_another_variant(capsys, data: Path, tmp_path: Path):
    tiny = save_weights(create_model("volo_tiny", img_size=32, num_classes=4), tmp_path / "tiny")
    code, lines = cli(capsys, *train_argv(data, tmp_path, "model.name=volo_d1", f"model.init_checkpoint={tiny}"))
    assert_one_line_error(code, lines, "train", f"{tiny} holds volo_tiny", "create the model as volo_tiny")
    with pytest.raises(VoloError, match="holds volo_tiny"):
        create_model("volo_d1", checkpoint=tiny)
    # A training checkpoint of volo_tiny resumed by a volo_d1 run.
    cfg = load_config("debug", [*TINY, "train.batch_size=8"])
    ckpt = TrainingCheckpoint(
        create_model("volo_tiny", img_size=32, num_classes=4).state_dict(),
        {"state": {}, "param_groups": []},
        Progress(step=1),
        cfg.to_dict(),
        1,
    )
    path = tmp_path / "tiny_step.pt"
    torch.save(ckpt.to_dict(), path)
    code, lines = cli(capsys, *train_argv(data, tmp_path, "model.name=volo_d1"), "--resume", path)
    assert_one_line_error(code, lines, "train", f"{path} holds volo_tiny @32 px with 4 classes", "--name")
    code, lines = cli(capsys, *train_argv(data, tmp_path), "--resume", tmp_path / "missing.pt")
    assert_one_line_error(code, lines, "train", "does not exist")


# -- a malicious pickle ----------------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs `os.system("touch <marker>")`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(a checkpoint whose unpickling creates `marker`, marker) - looks like every kind of weights file."""
    marker = tmp_path / "PWNED"
    weights = create_model("volo_tiny", img_size=32, num_classes=4).state_dict()
    cfg = load_config("debug", [*TINY, "train.batch_size=8"])
    ckpt = TrainingCheckpoint(weights, {"state": {}, "param_groups": []}, Progress(step=99), cfg.to_dict(), 1)
    path = tmp_path / "evil.pth.tar"
    torch.save({**ckpt.to_dict(), "state_dict": weights, "hook": Payload(marker)}, path)
    return path, marker


def test_payload_is_real(evil):
    path, marker = evil
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=120,
        capture_output=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
    )
    assert marker.exists(), "the payload did not run under an unsafe load: the refusal tests would prove nothing"


def test_every_loading_path_refuses_the_payload(capsys, evil, data: Path, tmp_path: Path):
    path, marker = evil
    refused = "could run code"  # the refused global is named; torch's weights_only=False advice is not relayed
    for argv, command in [
        (["eval", path, "--data", data / "val", "--workers", "0"], "eval"),
        (["predict", path, next((data / "val").rglob("*.jpg"))], "predict"),
        ([*train_argv(data, tmp_path), "--resume", path], "train"),
        (train_argv(data, tmp_path, f"model.init_checkpoint={path}"), "train"),
    ]:
        code, lines = cli(capsys, *argv)
        assert_one_line_error(code, lines, command, str(path))
        assert refused in lines[0] and "weights_only" not in lines[0], lines[0]
        assert not marker.exists(), f"volo {command} ran the payload"
    for load in (
        load_checkpoint,
        read_state_dict,
        lambda p: create_model("volo_tiny", img_size=32, checkpoint=p),
        lambda p: create_model("auto", checkpoint=p),
    ):
        with pytest.raises(VoloError):
            load(path)
        assert not marker.exists()
    print("\nRELIABILITY pickle: refused by volo eval, predict, train --resume, init_checkpoint, create_model")


def test_resume_auto_skips_a_malicious_newest_checkpoint(evil, tmp_path: Path):
    path, marker = evil
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    cfg = load_config("debug", [*TINY, "train.batch_size=8"])
    good = TrainingCheckpoint(
        {"w": torch.zeros(1)}, {"state": {}, "param_groups": []}, Progress(step=3), cfg.to_dict(), 1
    )
    torch.save(good.to_dict(), ckpts / "step000000003.pt")
    os.link(path, ckpts / "step000000099.pt")
    with pytest.warns(UserWarning, match=f"Skipping damaged checkpoint {ckpts / 'step000000099.pt'}"):
        found = resolve_resume("auto", ckpts)
    assert found is not None and found[0].name == "step000000003.pt" and not marker.exists()


def test_every_torch_load_in_volo_is_weights_only():
    """Static guard: a new `torch.load` without weights_only=True anywhere in the package fails this test."""
    offenders = []
    for path in sorted((REPO / "volo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                owner = getattr(node.func.value, "id", None)
                if owner == "torch":
                    ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                    if not ok:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == [], offenders
