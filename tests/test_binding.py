"""Binding plans on fake sysfs trees: exact cores, memory nodes and HCAs per rank (DGX A100, DGX H100, 1-GPU VM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from volo.cli.main import main as volo_main
from volo.distributed.binding import CoreSlicing, apply_binding, compute_binding_plan
from volo.distributed.binding_map import apply_binding_map, load_binding_map
from volo.distributed.cpulist import format_cpulist, parse_cpulist
from volo.distributed.topology import read_topology
from volo.errors import VoloError

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "topologies"))
import fake_sysfs  # noqa: E402


def r(text: str) -> tuple[int, ...]:
    return parse_cpulist(text)


@pytest.fixture(scope="module")
def dgx_a100(tmp_path_factory) -> Path:
    return fake_sysfs.dgx_a100(tmp_path_factory.mktemp("dgx_a100"))


@pytest.fixture(scope="module")
def dgx_h100(tmp_path_factory) -> Path:
    return fake_sysfs.dgx_h100(tmp_path_factory.mktemp("dgx_h100"))


@pytest.fixture(scope="module")
def vm(tmp_path_factory) -> Path:
    return fake_sysfs.vm_1gpu(tmp_path_factory.mktemp("vm"))


def test_cpulist_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert format_cpulist([11, 10, 8, 3, 2, 1, 0]) == "0-3,8,10-11"
    assert parse_cpulist("") == ()
    with pytest.raises(VoloError, match="not a CPU list"):
        parse_cpulist("3-1")


def test_dgx_a100_topology(dgx_a100):
    topo = read_topology(dgx_a100, use_nvml=False)
    assert [g.numa_node for g in topo.gpus] == [3, 3, 1, 1, 7, 7, 5, 5]  # NVSwitches are not GPUs
    assert [h.name for h in topo.hcas] == [f"mlx5_{i}" for i in range(10)]
    assert topo.node(3).cpus == r("48-63,176-191")
    assert topo.siblings_of(50) == (50, 178)


# The reference table (scale-reference.md): node cores per GPU, compute HCA per GPU; mlx5_4/5 never used.
A100_TABLE = {
    0: (3, "48-63,176-191", "mlx5_0"),
    1: (3, "48-63,176-191", "mlx5_1"),
    2: (1, "16-31,144-159", "mlx5_2"),
    3: (1, "16-31,144-159", "mlx5_3"),
    4: (7, "112-127,240-255", "mlx5_6"),
    5: (7, "112-127,240-255", "mlx5_7"),
    6: (5, "80-95,208-223", "mlx5_8"),
    7: (5, "80-95,208-223", "mlx5_9"),
}


def test_dgx_a100_node_mode_matches_reference_table(dgx_a100):
    plan = compute_binding_plan(read_topology(dgx_a100, use_nvml=False), mode=CoreSlicing.NODE)
    assert plan.notes == ()
    for rank in plan.ranks:
        node, cpus, hca = A100_TABLE[rank.local_rank]
        assert (rank.gpu, rank.mem_node, rank.cpus, rank.hca) == (rank.local_rank, node, r(cpus), hca)
        assert rank.physical_cores == 16


def test_dgx_a100_unique_contiguous_slices(dgx_a100):
    plan = compute_binding_plan(read_topology(dgx_a100, use_nvml=False))
    expected = [
        "48-55,176-183", "56-63,184-191", "16-23,144-151", "24-31,152-159",
        "112-119,240-247", "120-127,248-255", "80-87,208-215", "88-95,216-223",
    ]  # fmt: skip
    assert [format_cpulist(x.cpus) for x in plan.ranks] == expected
    assert [x.mem_node for x in plan.ranks] == [3, 3, 1, 1, 7, 7, 5, 5]
    assert [x.hca for x in plan.ranks] == [f"mlx5_{i}" for i in (0, 1, 2, 3, 6, 7, 8, 9)]  # nearest per GPU
    # NCCL gets the node's compute HCAs, the same list on every rank (never mlx5_4/5, the storage NICs)
    assert {x.env()["NCCL_IB_HCA"] for x in plan.ranks} == {
        "=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1"
    }
    assert {x.env()["OMP_NUM_THREADS"] for x in plan.ranks} == {"8"}
    assert plan.ranks[0].numactl_command() == ["numactl", "--physcpubind=48-55,176-183", "--membind=3"]


def test_dgx_a100_interleaved_and_affinity_mask(dgx_a100):
    topo = read_topology(dgx_a100, use_nvml=False)
    plan = compute_binding_plan(topo, mode=CoreSlicing.UNIQUE_INTERLEAVED, nproc=2)
    assert plan.ranks[0].cpus == tuple(sorted([*range(48, 64, 2), *range(176, 192, 2)]))
    assert plan.ranks[1].cpus == tuple(sorted([*range(49, 64, 2), *range(177, 192, 2)]))
    # A cgroup/Slurm mask allowing only 48-51 (+siblings): GPUs 0 and 1 split those four cores.
    allowed = r("48-51,176-179")
    plan = compute_binding_plan(topo, nproc=2, allowed_cpus=allowed)
    assert [x.cpus for x in plan.ranks] == [r("48-49,176-177"), r("50-51,178-179")]
    # CUDA_VISIBLE_DEVICES=6,2: local rank 0 is GPU 6 (node 5), local rank 1 is GPU 2 (node 1).
    plan = compute_binding_plan(topo, visible_gpus=[6, 2])
    assert [(x.gpu, x.mem_node, x.hca, x.cpus) for x in plan.ranks] == [
        (6, 5, "mlx5_8", r("80-95,208-223")),
        (2, 1, "mlx5_2", r("16-31,144-159")),
    ]


def test_dgx_h100_plan(dgx_h100):
    topo = read_topology(dgx_h100, use_nvml=False)
    assert [g.numa_node for g in topo.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(topo.hcas) == 12
    plan = compute_binding_plan(topo)
    assert plan.notes == ()
    got = [(x.gpu, format_cpulist(x.cpus), x.mem_node, x.hca) for x in plan.ranks]
    assert got == [
        (0, "0-13,112-125", 0, "mlx5_0"),
        (1, "14-27,126-139", 0, "mlx5_3"),
        (2, "28-41,140-153", 0, "mlx5_4"),
        (3, "42-55,154-167", 0, "mlx5_5"),
        (4, "56-69,168-181", 1, "mlx5_6"),
        (5, "70-83,182-195", 1, "mlx5_9"),
        (6, "84-97,196-209", 1, "mlx5_10"),
        (7, "98-111,210-223", 1, "mlx5_11"),
    ]
    same = "=mlx5_0:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_9:1,mlx5_10:1,mlx5_11:1"
    assert {x.env()["NCCL_IB_HCA"] for x in plan.ranks} == {same}  # one list per node, storage NICs left out
    # two ranks on the node: both get the same list, the HCAs of the GPUs in use
    assert {x.env()["NCCL_IB_HCA"] for x in compute_binding_plan(topo, nproc=2).ranks} == {"=mlx5_0:1,mlx5_3:1"}
    assert {x.hca for x in plan.ranks}.isdisjoint({"mlx5_1", "mlx5_2", "mlx5_7", "mlx5_8"})  # storage NICs


def test_vm_without_numa_or_ib(vm):
    topo = read_topology(vm, use_nvml=False)
    assert topo.gpus[0].numa_node is None and topo.hcas == ()
    plan = compute_binding_plan(topo, allowed_cpus=range(8))
    (rank,) = plan.ranks
    assert (rank.gpu, rank.cpus, rank.mem_node, rank.hca) == (0, tuple(range(8)), None, None)
    assert rank.env() == {"OMP_NUM_THREADS": "8"}
    assert rank.numactl_command() == ["numactl", "--physcpubind=0-7"]
    assert len(plan.notes) == 2
    assert "numa_node -1" in plan.notes[0] and "NCCL_IB_HCA left unset" in plan.notes[1]
    with pytest.raises(VoloError, match="only 1 GPUs are visible"):
        compute_binding_plan(topo, nproc=2)


def test_map_file_override(dgx_a100, tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("ranks:\n  - local_rank: 1\n    cores: '0-3'\n    mem_node: null\n    hca: mlx5_4:2\n")
    topo = read_topology(dgx_a100, use_nvml=False)
    plan = apply_binding_map(compute_binding_plan(topo), load_binding_map(path), path)
    one = plan.ranks[1]
    assert (one.cpus, one.mem_node, one.hca, one.source) == ((0, 1, 2, 3), None, "mlx5_4", "map-file")
    # the map changes rank 1's HCA: the node list changes for every rank alike
    assert {x.env()["NCCL_IB_HCA"] for x in plan.ranks} == {
        "=mlx5_0:1,mlx5_2:1,mlx5_3:1,mlx5_4:2,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1"
    }
    assert plan.ranks[0].source == "topology" and plan.ranks[0].hca == "mlx5_0"
    # with the topology, SMT siblings count once towards the rank's threads (as in derived bindings)
    path.write_text("ranks:\n  - local_rank: 0\n    cores: '0-3,128-131'\n")
    smt = apply_binding_map(compute_binding_plan(topo), load_binding_map(path), path, topo).ranks[0]
    assert len(smt.cpus) == 8 and smt.env()["OMP_NUM_THREADS"] == "4"
    json_path = tmp_path / "map.json"
    json_path.write_text(json.dumps({"9": {"cores": "1"}}))
    with pytest.raises(VoloError, match="binds local rank 9"):
        apply_binding_map(plan, load_binding_map(json_path), json_path)
    path.write_text("0: {cores: '1', gpu: 3}\n")
    with pytest.raises(VoloError, match="unknown key"):
        load_binding_map(path)


def test_apply_binding_sets_affinity_and_env(dgx_a100):
    rank = compute_binding_plan(read_topology(dgx_a100, use_nvml=False)).ranks[4]
    calls, env = [], {}
    changes = apply_binding(rank, env, set_affinity=lambda pid, cpus: calls.append((pid, cpus)))
    assert calls == [(0, set(r("112-119,240-247")))]
    assert (
        env
        == changes
        == {
            "OMP_NUM_THREADS": "8",
            "NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1",
        }
    )


def test_cli_print_and_exec(dgx_a100, capsys):
    assert volo_main(["bind", "--print", "--sysfs-root", str(dgx_a100), "--no-nvml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "rank",
        "gpu",
        "gpu",
        "node",
        "cpus",
        "cores",
        "mem",
        "node",
        "nearest",
        "HCA",
        "source",
    ]
    assert lines[5].split() == ["4", "4", "7", "112-119,240-247", "8", "7", "mlx5_6:1", "topology"]
    assert (
        lines[9] == "NCCL_IB_HCA (every rank): =mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1"
    )
    assert volo_main(["bind", "--numactl", "--local-rank", "7", "--sysfs-root", str(dgx_a100), "--no-nvml"]) == 0
    assert capsys.readouterr().out.strip() == "numactl --physcpubind=88-95,216-223 --membind=5"
    assert volo_main(["bind", "--local-rank", "9", "--numactl", "--sysfs-root", str(dgx_a100), "--no-nvml"]) == 2
    assert "local rank 9" in capsys.readouterr().err
    # Exec path on this machine (no GPU): the child runs pinned to the CPU slice of its local rank.
    out = subprocess.run(
        [sys.executable, "-m", "volo.cli.main", "bind", "--no-nvml", "--", "sh", "-c",
         "echo $OMP_NUM_THREADS; grep Cpus_allowed_list /proc/self/status"],
        env={**os.environ, "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    expected = compute_binding_plan(read_topology("/", use_nvml=False), allowed_cpus=os.sched_getaffinity(0)).ranks[0]
    assert out.stdout.split() == [str(expected.physical_cores), "Cpus_allowed_list:", format_cpulist(expected.cpus)]


class FakeNvml:
    """A stand-in for pynvml: GPUs listed by bus id, optional NUMA ids."""

    def __init__(self, buses: list[str], numa: list[int]):
        self.buses, self.numa = buses, numa

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.buses)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetPciInfo(self, handle):
        return type("PciInfo", (), {"busId": self.buses[handle].encode()})()

    def nvmlDeviceGetNumaNodeId(self, handle):
        return self.numa[handle]


def test_nvml_lists_the_gpus(dgx_a100, vm, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(["00000000:47:00.0", "00000000:07:00.0"], [9, 9]))
    topo = read_topology(dgx_a100)
    assert topo.source == "nvml+sysfs"
    assert [(g.index, g.pci_bus_id, g.numa_node) for g in topo.gpus] == [(0, "0000:47:00.0", 1), (1, "0000:07:00.0", 3)]
    plan = compute_binding_plan(topo)
    assert [(x.cpus, x.hca) for x in plan.ranks] == [(r("16-31,144-159"), "mlx5_2"), (r("48-63,176-191"), "mlx5_0")]
    # sysfs says -1 on the VM; NVML's NUMA id fills in.
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(["00000000:00:1E.0"], [0]))
    topo = read_topology(vm)
    assert [(g.pci_bus_id, g.numa_node) for g in topo.gpus] == [("0000:00:1e.0", 0)]
    assert compute_binding_plan(topo).ranks[0].mem_node == 0
