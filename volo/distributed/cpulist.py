"""Linux cpulist strings ("0-3,8,10-11"), as sysfs writes them and numactl/taskset read them."""

from __future__ import annotations

from collections.abc import Iterable

from volo.errors import VoloError


def parse_cpulist(text: str, *, where: str = "cpulist") -> tuple[int, ...]:
    """Parse "0-3,8" into (0, 1, 2, 3, 8), sorted and unique. An empty string is the empty set.

    `where` names the file or flag the text came from, for the error message.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError(part)
                cpus.update(range(low, high + 1))
            else:
                cpus.add(int(part))
        except ValueError:
            raise VoloError(f"{where}: {text.strip()!r} is not a CPU list; write it like '0-3,8,10-11'.") from None
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPUs as the shortest cpulist: (0, 1, 2, 3, 8) -> "0-3,8"."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            ranges.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = cpu
    if start is not None:
        ranges.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(ranges)
