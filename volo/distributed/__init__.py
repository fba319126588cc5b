"""Running on many GPUs and nodes.

| concept | file |
|---|---|
| process group from torchrun's environment | `process_group.py` |
| machine topology (GPUs, NUMA nodes, SMT siblings, HCAs) from sysfs/NVML | `topology.py` |
| per-rank CPU/memory/HCA binding plan, apply, numactl prefix | `binding.py` |
| binding overrides from a YAML/JSON map file | `binding_map.py` |
| cpulist strings ("0-3,8") | `cpulist.py` |
| scaling planner (images/s, efficiency, time-to-train) and its plot | `planner.py`, `planner_plot.py` |
| sbatch script generation and submission | `slurm.py` |
"""
