"""A torchrun worker that provokes the restart race: attempt 0 loses rank 1 to SIGKILL; in attempt 1 rank 1 joins
4 s late, so rank 0 reads the rendezvous store first. Without a per-attempt store prefix rank 0 then finds rank 1's
address from attempt 0 and gloo fails with "connectFullMesh failed ... Connection refused"."""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.distributed as dist

from volo.distributed.process_group import init_distributed, teardown

attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], int(os.environ["RANK"])
if attempt == "1" and rank == 1:
    time.sleep(4)
init_distributed()
total = torch.ones(1)
dist.all_reduce(total)
if attempt == "0" and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(0.5)
dist.all_reduce(total)
print(f"attempt {attempt} rank {rank} sum {int(total.item())}", flush=True)
teardown()
