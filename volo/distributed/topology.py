"""The machine as binding sees it: GPUs, NUMA nodes, SMT siblings and InfiniBand HCAs, read from sysfs (and NVML).

Everything is read below a sysfs root (default `/`), so tests point it at a fake tree in a temporary folder:

    <root>/sys/devices/system/cpu/online                               "0-255"
    <root>/sys/devices/system/cpu/cpu<i>/topology/thread_siblings_list  "0,128"
    <root>/sys/devices/system/node/node<n>/cpulist                      "48-63,176-191"
    <root>/sys/bus/pci/devices/<bus id> -> ../../../devices/pci0000:00/.../<bus id>
        vendor "0x10de", class "0x030200", numa_node "3" (or "-1" on VMs)
    <root>/sys/class/infiniband/<hca>/device -> the HCA's PCI device folder
        <root>/sys/class/infiniband/<hca>/ports/<p>/{link_layer,state}

GPU indices follow PCI bus order (nvidia-smi's order; CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID). With NVML
(`pip install nvidia-ml-py`) the GPU list and order come from the driver instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from volo.distributed.cpulist import parse_cpulist

NVIDIA_VENDOR = "0x10de"
# PCI class codes of GPUs: 0x0300xx VGA controller, 0x0302xx 3D controller (datacenter GPUs). NVSwitches are 0x0680.
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")


@dataclass(frozen=True)
class GpuDevice:
    """One GPU: its index (PCI bus order or NVML's), PCI address and NUMA node."""

    index: int
    pci_bus_id: str
    """Domain:bus:device.function, lower case: "0000:07:00.0"."""
    numa_node: int | None
    """None where the firmware reports -1 (typical of VMs) or nothing."""
    pci_path: tuple[str, ...] = ()
    """PCI hierarchy from the root complex down to the device: ("pci0000:00", "0000:00:01.1", ..., bus id)."""


@dataclass(frozen=True)
class InfinibandHca:
    """One RDMA adapter (InfiniBand or RoCE) from /sys/class/infiniband."""

    name: str
    """Device name as NCCL_IB_HCA spells it: "mlx5_0"."""
    pci_bus_id: str
    numa_node: int | None
    pci_path: tuple[str, ...] = ()
    ports: tuple[int, ...] = (1,)
    """Active port numbers (all ports when their state is unknown)."""
    link_layer: str = "InfiniBand"
    """"InfiniBand" or "Ethernet" (RoCE), from the first port."""


@dataclass(frozen=True)
class NumaNode:
    """A NUMA node and its CPUs (logical CPU ids, SMT siblings included)."""

    id: int
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class Topology:
    """What binding needs to know about one machine."""

    gpus: tuple[GpuDevice, ...]
    numa_nodes: tuple[NumaNode, ...]
    hcas: tuple[InfinibandHca, ...]
    online_cpus: tuple[int, ...]
    thread_siblings: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """CPU -> its SMT sibling group (itself included). CPUs missing here count as their own group."""
    source: str = "sysfs"
    """"sysfs" or "nvml+sysfs": where the GPU list came from."""

    def node(self, node_id: int) -> NumaNode | None:
        """The NUMA node with this id, or None."""
        return next((n for n in self.numa_nodes if n.id == node_id), None)

    def siblings_of(self, cpu: int) -> tuple[int, ...]:
        """The SMT sibling group of `cpu` (itself included)."""
        return self.thread_siblings.get(cpu, (cpu,))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _numa_node(device_dir: Path) -> int | None:
    text = _read(device_dir / "numa_node")
    if text is None:
        return None
    try:
        node = int(text)
    except ValueError:
        return None
    return node if node >= 0 else None


def _pci_path(device_dir: Path, sysfs_root: Path) -> tuple[str, ...]:
    """The PCI chain of a device folder, from the resolved path below <root>/sys/devices."""
    resolved = Path(os.path.realpath(device_dir))
    devices = Path(os.path.realpath(sysfs_root / "sys" / "devices"))
    try:
        relative = resolved.relative_to(devices)
    except ValueError:
        return (resolved.name,)
    return tuple(part for part in relative.parts if part.startswith("pci") or ":" in part)


def _sorted_numbered(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        suffix = entry.name[len(prefix) :]
        if entry.name.startswith(prefix) and suffix.isdigit():
            found.append((int(suffix), entry))
    return sorted(found)


def read_numa_nodes(sysfs_root: Path) -> tuple[NumaNode, ...]:
    """NUMA nodes with their cpulists; nodes without CPUs (memory-only, GPU HBM nodes) are left out."""
    nodes = []
    for node_id, folder in _sorted_numbered(sysfs_root / "sys/devices/system/node", "node"):
        text = _read(folder / "cpulist")
        cpus = parse_cpulist(text, where=str(folder / "cpulist")) if text else ()
        if cpus:
            nodes.append(NumaNode(id=node_id, cpus=cpus))
    return tuple(nodes)


def read_thread_siblings(sysfs_root: Path) -> dict[int, tuple[int, ...]]:
    """CPU -> SMT sibling group, from cpu<i>/topology/thread_siblings_list (core_cpus_list on newer kernels)."""
    siblings = {}
    for cpu, folder in _sorted_numbered(sysfs_root / "sys/devices/system/cpu", "cpu"):
        topology = folder / "topology"
        text = _read(topology / "thread_siblings_list") or _read(topology / "core_cpus_list")
        if text:
            siblings[cpu] = parse_cpulist(text, where=str(topology / "thread_siblings_list"))
    return siblings


def read_online_cpus(sysfs_root: Path, nodes: tuple[NumaNode, ...]) -> tuple[int, ...]:
    """Online CPUs from cpu/online, else the union of the nodes' cpulists, else 0..os.cpu_count()-1."""
    text = _read(sysfs_root / "sys/devices/system/cpu/online")
    if text:
        return parse_cpulist(text, where=str(sysfs_root / "sys/devices/system/cpu/online"))
    if nodes:
        return tuple(sorted({cpu for node in nodes for cpu in node.cpus}))
    return tuple(range(os.cpu_count() or 1))


def read_sysfs_gpus(sysfs_root: Path) -> tuple[GpuDevice, ...]:
    """NVIDIA GPUs on the PCI bus, in bus order (NVSwitches and other NVIDIA bridges excluded)."""
    folder = sysfs_root / "sys/bus/pci/devices"
    if not folder.is_dir():
        return ()
    gpus = []
    for device in sorted(folder.iterdir(), key=lambda p: p.name):
        if _read(device / "vendor") != NVIDIA_VENDOR:
            continue
        if not (_read(device / "class") or "").startswith(GPU_CLASS_PREFIXES):
            continue
        gpus.append((device.name.lower(), _numa_node(device), _pci_path(device, sysfs_root)))
    return tuple(
        GpuDevice(index=i, pci_bus_id=bus, numa_node=node, pci_path=path) for i, (bus, node, path) in enumerate(gpus)
    )


def _natural_key(name: str) -> tuple:
    """Sort "mlx5_2" before "mlx5_10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def read_hcas(sysfs_root: Path) -> tuple[InfinibandHca, ...]:
    """RDMA adapters with at least one active port (ports with unknown state count as active)."""
    folder = sysfs_root / "sys/class/infiniband"
    if not folder.is_dir():
        return ()
    hcas = []
    for hca in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        device = hca / "device"
        ports, layers = [], []
        for port, port_dir in _sorted_numbered(hca / "ports", ""):
            state = _read(port_dir / "state")
            if state is None or "ACTIVE" in state:
                ports.append(port)
                layers.append(_read(port_dir / "link_layer") or "InfiniBand")
        if not (hca / "ports").is_dir():
            ports, layers = [1], ["InfiniBand"]
        if not ports:
            continue
        hcas.append(
            InfinibandHca(
                name=hca.name,
                pci_bus_id=Path(os.path.realpath(device)).name.lower(),
                numa_node=_numa_node(device),
                pci_path=_pci_path(device, sysfs_root),
                ports=tuple(ports),
                link_layer=layers[0],
            )
        )
    return tuple(hcas)


def read_nvml_gpus(sysfs_root: Path) -> tuple[GpuDevice, ...] | None:
    """GPUs as NVML lists them (index order = CUDA's PCI_BUS_ID order), or None when NVML is unavailable.

    NUMA node and PCI path come from sysfs by bus id; NVML's own NUMA id fills in where sysfs has none.
    """
    try:
        import pynvml  # optional: pip install nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any NVML failure (no driver, no GPU) means "use sysfs"
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            bus = pynvml.nvmlDeviceGetPciInfo(handle).busId
            bus = (bus.decode() if isinstance(bus, bytes) else bus).lower()
            bus = bus[-12:]  # NVML writes an 8-digit domain: "00000000:07:00.0" -> "0000:07:00.0"
            device = sysfs_root / "sys/bus/pci/devices" / bus
            node = _numa_node(device)
            if node is None and hasattr(pynvml, "nvmlDeviceGetNumaNodeId"):
                try:
                    nvml_node = int(pynvml.nvmlDeviceGetNumaNodeId(handle))
                    node = nvml_node if nvml_node >= 0 else None
                except Exception:  # noqa: BLE001 - older drivers lack it
                    node = None
            path = _pci_path(device, sysfs_root) if device.exists() else (bus,)
            gpus.append(GpuDevice(index=index, pci_bus_id=bus, numa_node=node, pci_path=path))
        return tuple(gpus)
    finally:
        pynvml.nvmlShutdown()


def read_topology(sysfs_root: Path | str = "/", *, use_nvml: bool = True) -> Topology:
    """Read the machine's topology below `sysfs_root`; NVML (when installed and `use_nvml`) lists the GPUs."""
    root = Path(sysfs_root)
    nodes = read_numa_nodes(root)
    nvml_gpus = read_nvml_gpus(root) if use_nvml else None
    return Topology(
        gpus=nvml_gpus if nvml_gpus is not None else read_sysfs_gpus(root),
        numa_nodes=nodes,
        hcas=read_hcas(root),
        online_cpus=read_online_cpus(root, nodes),
        thread_siblings=read_thread_siblings(root),
        source="nvml+sysfs" if nvml_gpus is not None else "sysfs",
    )
