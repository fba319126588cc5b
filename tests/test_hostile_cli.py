"""Command-line paths that cannot work: `--out` at an existing file, and splits whose classes differ late.

Each case is a real file or folder on disk and the real `main()` of the `volo` command; the answer must be one
line naming the flag or the difference, exit code 2, no traceback.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from faults import TINY, make_data

from volo.cli.main import main


def cli(capsys, *argv) -> tuple[int, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_line(code: int, lines: list[str], command: str, *fragments: str) -> None:
    assert code in (1, 2) and len(lines) == 1, (code, lines)  # 2: refused before the run, 1: the run failed
    assert lines[0].startswith(f"volo {command}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    print(f"\nRELIABILITY bad-input: {lines[0]}")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("cli"), per_class=2)


def train_argv(data: Path, out: Path, *extra: str) -> list:
    argv = ["train", "debug", "--data", data, "--out", out]
    for item in [*TINY, "train.batch_size=4", *extra]:
        argv += ["--set", item]
    return argv


def test_out_pointing_at_a_file(capsys, data: Path, tmp_path: Path):
    afile = tmp_path / "notes.txt"
    afile.write_text("a file, not a folder")
    one_line(*cli(capsys, *train_argv(data, afile)), "train", f"--out (checkpoint.output_dir) {afile} is a file")
    one_line(*cli(capsys, *train_argv(data, afile / "sub")), "train", f"lies under {afile}, which is a file")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "debug").write_text("")  # the run folder itself is a file
    one_line(*cli(capsys, *train_argv(data, runs)), "train", "--name (checkpoint.run_name)", "is a file")
    argv = ["label", "--data", data / "train", "--teacher", "volo_tiny", "--out", afile, "--workers", "0"]
    one_line(*cli(capsys, *argv), "label", f"--out {afile} is a file, not a folder")
    one_line(*cli(capsys, "demo", "--out", afile), "demo", f"--out {afile} is a file, not a folder")
    assert afile.read_text() == "a file, not a folder"


def test_class_mismatch_prints_the_difference(capsys, data: Path, tmp_path: Path):
    mixed = tmp_path / "mixed"
    shutil.copytree(data, mixed)
    (mixed / "val" / "class_03").rename(mixed / "val" / "class_09")  # the first three classes agree
    one_line(
        *cli(capsys, *train_argv(mixed, tmp_path / "runs")),
        "train",
        "only in val: ['class_09']; only in train: ['class_03']",
    )
