#!/usr/bin/env python3
"""A stand-in for the `volo` executable in Slurm tests: `bind` is the real `volo bind`; `train` is a small gloo job.

    FAKE_STEPS=N FAKE_STEP_S=S fake_trainer.py train RECIPE --resume auto --out OUT --name NAME

(settings come from the environment, `volo slurm --env`: `--set` is checked against the real recipe).

Each step sleeps `step_s` and all-reduces a counter (a real collective over all ranks). SIGUSR2/SIGTERM set a flag;
at the next step boundary the ranks agree (all_reduce MAX), rank 0 writes OUT/NAME/fake_ckpt.json {"step": k}
atomically, and every rank exits as `volo train` does after a stop (3; 0 under torchrun). `--resume auto` continues
from that file; at `steps` rank 0 writes OUT/NAME/fake_done.json with the world size, the steps run in each attempt
and the summed counter (must equal steps x world size).
FAKE_DIE_RANK=R FAKE_DIE_STEP=K makes rank R exit 5 at step K (the other ranks then block in a collective).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv and argv[0] == "bind":
        os.execv(sys.executable, [sys.executable, "-m", "volo.cli.main", *argv])
    assert argv[0] == "train", argv
    out = Path(argv[argv.index("--out") + 1]) / argv[argv.index("--name") + 1]
    steps, step_s = int(os.environ.get("FAKE_STEPS", 40)), float(os.environ.get("FAKE_STEP_S", 0.25))
    die_rank, die_step = int(os.environ.get("FAKE_DIE_RANK", -1)), int(os.environ.get("FAKE_DIE_STEP", -1))

    stop = {"flag": 0}
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.update(flag=signum))

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ckpt = out / "fake_ckpt.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "attempts": [], "total": 0}
    start = state["step"]
    print(
        f"rank {rank}/{world} pid {os.getpid()} host {os.environ.get('SLURMD_NODENAME')} "
        f"cpus {sorted(os.sched_getaffinity(0))} resumes at step {start}",
        flush=True,
    )
    total = state["total"]
    step = start
    while step < steps:
        if rank == die_rank and step == die_step:
            print(f"rank {rank}: dying at step {step}", flush=True)
            os._exit(5)
        time.sleep(step_s)
        counter = torch.ones(1)
        dist.all_reduce(counter)
        total += int(counter.item())
        step += 1
        flag = torch.tensor([stop["flag"]])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            if rank == 0:
                state = {"step": step, "attempts": [*state["attempts"], step - start], "total": total}
                tmp = ckpt.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, ckpt)
                print(f"signal {flag.item()}: checkpoint at step {step}", flush=True)
            dist.barrier()
            dist.destroy_process_group()
            return 0 if "TORCHELASTIC_RUN_ID" in os.environ else 3
    if rank == 0:
        done = {"world": world, "attempts": [*state["attempts"], step - start], "total": total, "steps": steps}
        (out / "fake_done.json").write_text(json.dumps(done))
        print(f"done: {done}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
