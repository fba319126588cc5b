"""Mutation run: apply one-line bugs (tests/mutation/mutants.py), one at a time, to a scratch copy of the tree and
run the fast tests that cover each; a mutant is killed when those tests fail. Not collected by pytest.

    nice -n 10 python tests/mutation/run.py                 # all mutants; results in /tmp/volo-mutation/
    python tests/mutation/run.py --only step-lam-flipped     # some, by id (comma-separated)
    python tests/mutation/run.py --list

The working tree is never touched: `git ls-files` (tracked and untracked, not ignored) is copied to a scratch
folder; each mutant edits one file there, runs `pytest -x` with that folder first on PYTHONPATH (per-mutant
timeout), then restores the file. Each distinct test selection is first run unmutated: a selection that fails
without a mutant makes its mutants 'invalid', never 'killed'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def copy_tree(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


PYTEST_ARGS = ["-x", "-q", "-rfE", "-p", "no:cacheprovider", "--no-header"]


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last output line).

    pytest runs in a child forked from this process, which has imported torch but not volo: the child imports the
    (mutated) volo from `tree`, and no run pays torch's import again. Subprocesses the tests start see `tree` first
    on PYTHONPATH."""
    os.environ.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    log = tree / ".mutation-pytest.log"
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: own process group (killed whole on timeout), output to the log
        os.setpgrp()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(tree)
        sys.path.insert(0, str(tree))
        import pytest

        os._exit(int(pytest.main([*PYTEST_ARGS, *tests])))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - t0 > timeout:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.perf_counter() - t0, ""
        time.sleep(0.5)
    returncode = os.waitstatus_to_exitcode(status)
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    failed = [x.split(" - ")[0] for x in lines if x.startswith(("FAILED ", "ERROR "))]  # the test that caught it
    detail = "; ".join(failed[:1] + lines[-1:])
    return ("pass" if returncode == 0 else "fail"), time.perf_counter() - t0, detail


def apply(tree: Path, m: Mutant) -> str | None:
    """Edit the copy; returns the original text, or None when `m.old` is not found exactly once (stale)."""
    path = tree / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        return None
    path.write_text(text.replace(m.old, m.new))
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per mutant")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "volo-mutation")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(f"{m.id:32s} {m.file:40s} {' '.join(m.tests)}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    import torch  # noqa: F401  (once, before the forks: see run_tests)

    results_path = args.out / "results.jsonl"
    with tempfile.TemporaryDirectory(prefix="volo-mutation-") as tmp:
        tree = copy_tree(Path(tmp))
        baseline: dict[tuple[str, ...], str] = {}
        with results_path.open("w") as out:
            for m in chosen:
                if m.tests not in baseline:
                    baseline[m.tests], secs, last = run_tests(tree, m.tests, args.timeout)
                    print(f"[baseline] {' '.join(m.tests)}: {baseline[m.tests]} in {secs:.0f}s {last}", flush=True)
                original = apply(tree, m)
                if original is None:
                    status, secs, last = "stale", 0.0, f"{m.old!r} not found exactly once in {m.file}"
                elif baseline[m.tests] != "pass":
                    status, secs, last = "invalid", 0.0, "the tests fail without the mutant"
                else:
                    try:
                        outcome, secs, last = run_tests(tree, m.tests, args.timeout)
                    finally:
                        (tree / m.file).write_text(original)
                    status = {"pass": "survived", "fail": "killed", "timeout": "killed (timeout)"}[outcome]
                if original is not None and baseline[m.tests] != "pass":
                    (tree / m.file).write_text(original)
                row = {"id": m.id, "file": m.file, "status": status, "seconds": round(secs, 1), "detail": last}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"{status:16s} {m.id:32s} {secs:5.0f}s  {last}", flush=True)
    rows = [json.loads(x) for x in results_path.read_text().splitlines()]
    scored = [r for r in rows if r["status"] not in ("stale", "invalid")]
    killed = sum(r["status"].startswith("killed") for r in scored)
    print(f"\nscore: {killed}/{len(scored)} killed ({100 * killed / max(len(scored), 1):.0f}%); "
          f"{len(rows) - len(scored)} stale/invalid; results in {results_path}")  # fmt: skip
    for r in rows:
        if r["status"] in ("survived", "stale", "invalid"):
            print(f"  {r['status']}: {r['id']} ({r['file']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
