"""`volo` with every training sample recorded: `python record_worker.py train ...` (or as a torchrun script).

Each process appends the key (`<class>/<file>`) of every training image it loads to
`$VOLO_RECORD_DIR/rank<RANK>.restart<TORCHELASTIC_RESTART_COUNT>.pid<PID>.txt`, one line each, flushed at once so
that a SIGKILL loses nothing. Evaluation images (the val split) are not recorded. `$VOLO_RECORD_DELAY_S` (default 0)
makes every training-image load that much slower, so a test can signal a run before its first step ends.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from volo.cli.main import main
from volo.data.dataset import ImageFolderDataset


def _install(record_dir: Path) -> None:
    rank = os.environ.get("RANK", "0")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    out = open(record_dir / f"rank{rank}.restart{restart}.pid{os.getpid()}.txt", "a", buffering=1)  # noqa: SIM115
    original = ImageFolderDataset.__getitem__
    delay = float(os.environ.get("VOLO_RECORD_DELAY_S", "0"))

    def recording_getitem(self, index):
        sample = original(self, index)
        if self.root.name == "train":
            out.write(self.entries[sample.index].key + "\n")
            time.sleep(delay)
        return sample

    ImageFolderDataset.__getitem__ = recording_getitem


if __name__ == "__main__":
    _install(Path(os.environ["VOLO_RECORD_DIR"]))
    sys.exit(main(sys.argv[1:]))
