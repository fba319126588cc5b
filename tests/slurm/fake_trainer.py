#!/usr/bin/env python3
"""A stand-in for the `volo` executable in Slurm tests: `bind` is the real `volo bind`; `train` is a small gloo job.

    fake_trainer.py train RECIPE --resume auto --out OUT [--set steps=N] [--set step_s=S]

Each step sleeps `step_s` and all-reduces a counter (a real collective over all ranks). SIGUSR2/SIGTERM set a flag;
at the next step boundary the ranks agree (all_reduce MAX), rank 0 writes OUT/fake_ckpt.json {"step": k} atomically,
and every rank exits 0. `--resume auto` continues from that file; at `steps` rank 0 writes OUT/fake_done.json with
the world size, the steps run in each attempt and the summed counter (must equal steps x world size).
`--set die_rank=R --set die_step=K` makes rank R exit 3 at step K (the other ranks then block in a collective).
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
    out = Path(argv[argv.index("--out") + 1])
    sets = dict(a.split("=", 1) for i, a in enumerate(argv) if i > 0 and argv[i - 1] == "--set")
    steps, step_s = int(sets.get("steps", 40)), float(sets.get("step_s", 0.25))
    die_rank, die_step = int(sets.get("die_rank", -1)), int(sets.get("die_step", -1))

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
            os._exit(3)
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
            return 0
    if rank == 0:
        done = {"world": world, "attempts": [*state["attempts"], step - start], "total": total, "steps": steps}
        (out / "fake_done.json").write_text(json.dumps(done))
        print(f"done: {done}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
