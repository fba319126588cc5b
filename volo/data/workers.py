"""How many data-loading worker processes this process may usefully start.

torch warns ("This DataLoader will create 8 worker processes in total. Our suggested max number of worker in
current system is 2") when `num_workers` exceeds the CPUs this process may run on; recipes default to 8 workers
(eval 4), tuned for GPU nodes. Every loader caps the request at `usable_cpus()`, so small machines and
restricted cpusets (Slurm, taskset, containers) run without the warning and without oversubscription.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is no mask)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def cap_workers(requested: int) -> int:
    """`requested` worker processes, at most `usable_cpus()` (0 stays 0: load in this process)."""
    return min(max(requested, 0), usable_cpus())
