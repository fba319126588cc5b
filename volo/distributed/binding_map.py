"""Map-file override of the binding plan, for machines whose sysfs misleads or where an admin knows better.

A YAML or JSON file; every field is optional and replaces only what it names (null clears memory/HCA binding):

    ranks:
      - local_rank: 0
        cores: "48-55,176-183"   # cpulist
        mem_node: 3
        hca: mlx5_0              # optional ":port" suffix, e.g. mlx5_0:1
      - local_rank: 1
        cores: "56-63,184-191"
        mem_node: 3
        hca: mlx5_1

A mapping keyed by local rank (`0: {cores: ..., ...}`) is accepted too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from volo.distributed.binding import BindingPlan, RankBinding, core_groups, with_node_hcas
from volo.distributed.cpulist import parse_cpulist
from volo.distributed.topology import Topology
from volo.errors import VoloError

MAP_KEYS = {"local_rank", "cores", "mem_node", "hca"}


def _entries(data: Any, path: Path) -> dict[int, dict[str, Any]]:
    if isinstance(data, dict) and "ranks" in data:
        data = data["ranks"]
    entries: dict[int, dict[str, Any]] = {}
    if isinstance(data, list):
        for item in data:
            if not isinstance(item, dict) or "local_rank" not in item:
                raise VoloError(f"{path}: every entry under 'ranks' needs a 'local_rank' (see docs/cluster.md).")
            entries[int(item["local_rank"])] = item
    elif isinstance(data, dict):
        for key, item in data.items():
            if not isinstance(item, dict):
                raise VoloError(f"{path}: local rank {key} must map to {{cores, mem_node, hca}}, not {item!r}.")
            try:
                entries[int(key)] = item
            except ValueError:
                raise VoloError(f"{path}: key {key!r} is not a local rank number; use 0, 1, ...") from None
    else:
        raise VoloError(f"{path}: expected a 'ranks' list or a mapping of local rank -> binding (see docs/cluster.md).")
    return entries


def load_binding_map(path: Path | str) -> dict[int, dict[str, Any]]:
    """Read and validate a map file; returns local rank -> {cores?, mem_node?, hca?}."""
    path = Path(path)
    if not path.is_file():
        raise VoloError(f"binding map file {path} does not exist; pass an existing YAML/JSON file to --map.")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise VoloError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {str(err).splitlines()[0]}"
        ) from None
    entries = _entries(data, path)
    for rank, item in entries.items():
        unknown = set(item) - MAP_KEYS
        if unknown:
            raise VoloError(
                f"{path}: local rank {rank} has unknown key(s) {sorted(unknown)}; allowed: cores, mem_node, hca."
            )
        if "cores" in item:
            item["cores"] = parse_cpulist(str(item["cores"]), where=f"{path} (local rank {rank} cores)")
            if not item["cores"]:
                raise VoloError(f"{path}: local rank {rank} has an empty core list; give at least one CPU.")
    return entries


def apply_binding_map(
    plan: BindingPlan,
    entries: dict[int, dict[str, Any]],
    path: Path | str = "map file",
    topology: Topology | None = None,
) -> BindingPlan:
    """Replace the fields the map names; ranks absent from the map keep their derived binding. With `topology`,
    a rank's thread count is its physical cores (SMT siblings counted once), as for derived bindings."""
    known = {rank.local_rank for rank in plan.ranks}
    extra = sorted(set(entries) - known)
    if extra:
        raise VoloError(
            f"{path} binds local rank {extra[0]} but the plan has local ranks {sorted(known)}; "
            "remove it or start more ranks per node (--nproc)."
        )
    ranks: list[RankBinding] = []
    for rank in plan.ranks:
        item = entries.get(rank.local_rank)
        if item is None:
            ranks.append(rank)
            continue
        changes: dict[str, Any] = {"source": "map-file"}
        if "cores" in item:
            changes["cpus"] = item["cores"]
            cores = item["cores"]
            changes["physical_cores"] = len(core_groups(cores, topology)) if topology is not None else len(cores)
        if "mem_node" in item:
            changes["mem_node"] = None if item["mem_node"] is None else int(item["mem_node"])
        if "hca" in item:
            hca = item["hca"] or None
            changes["hca"], changes["hca_port"] = hca, rank.hca_port
            if hca and ":" in hca:
                name, port = hca.split(":", 1)
                changes["hca"], changes["hca_port"] = name, int(port)
        ranks.append(dataclasses.replace(rank, **changes))
    notes = (*plan.notes, f"ranks {sorted(entries)} overridden by {path}.")
    return BindingPlan(ranks=with_node_hcas(ranks), notes=notes)
