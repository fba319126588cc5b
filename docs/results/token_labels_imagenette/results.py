"""Turn an experiment folder (run.sh OUT, diagnose.sh OUT) into results.json and the markdown table of README.md.

python results.py OUT > table.md
"""

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from volo.data.targets import dense_label_map
from volo.labeling.store import ShardedLabelStore

out = Path(sys.argv[1])
runs = out / "runs"


def metrics(name: str) -> dict:
    return json.loads((runs / name / "result.json").read_text())["metrics"]


def minutes() -> dict:
    path = out / "minutes.txt"
    rows = [line.split() for line in path.read_text().splitlines()] if path.is_file() else []
    return {k: int(v) / 60 for k, v in rows}


def folder_class_mass(store_root: Path, smoothing: float = 0.1) -> dict:
    """Mean target probability on the folder class over the store's images, as the student's targets would be
    for an uncropped, unflipped image: token targets per cell, the class target from the map's mean logits
    (top-k logits, 0 elsewhere, softmax, label smoothing)."""
    store = ShardedLabelStore(store_root)
    keys = sorted(store.keys())
    classes = sorted({k.split("/")[0] for k in keys})
    k_classes = store.num_classes or len(classes)
    tok, cls = [], []
    for key in keys:
        lab = store.get(key)
        dense = dense_label_map(torch.from_numpy(lab.values)[None], torch.from_numpy(lab.ids)[None], k_classes)[0]
        y = classes.index(key.split("/")[0])
        off = smoothing / k_classes
        tok.append((dense.softmax(0)[y] * (1 - smoothing) + off).mean().item())
        cls.append((dense.mean((1, 2)).softmax(0)[y] * (1 - smoothing) + off).item())
    return {"token_targets": float(np.mean(tok)), "class_target": float(np.mean(cls)), "images": len(keys)}


teacher = metrics("teacher")
quality = json.loads((out / "labels" / "teacher_quality.json").read_text())
arms = {}
for arm in ("plain", "tl", "tlgt"):
    names = sorted(p.name for p in runs.glob(f"{arm}_s*") if (p / "result.json").is_file())
    arms[arm] = {n: metrics(n) for n in names}
mins = minutes()
summary = {
    "teacher": {"top1": teacher["top1"], "top5": teacher["top5"], "val_images": teacher["val_images"]},
    "teacher_quality": quality["summary"],
    "teacher_warnings": quality["warnings"],
    "teacher_model": json.loads((runs / "teacher" / "weights" / "final.json").read_text()).get("arch"),
    "target_mass_on_folder_class": folder_class_mass(out / "labels"),
    "minutes": mins,
}
print("| arm | seeds | val top-1 per seed | mean +- sd | val images |")
print("|---|---|---|---|---|")
names = {"plain": "plain labels + MixToken", "tl": "token labels + MixToken", "tlgt": "token labels + GT blend"}
for arm, label in names.items():
    top1 = [m["top1"] for m in arms[arm].values()]
    if not top1:
        continue
    sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
    mean = statistics.mean(top1)
    images = {m["val_images"] for m in arms[arm].values()}
    summary[arm] = {"top1": top1, "mean": mean, "sd": sd, "runs": list(arms[arm]), "val_images": sorted(images)}
    if arm != "plain" and len(top1) == len(summary["plain"]["top1"]):  # same seeds, same order
        summary[arm]["minus_plain_per_seed"] = [a - b for a, b in zip(top1, summary["plain"]["top1"])]
    cells = ", ".join(f"{v:.2f}" for v in top1)
    print(f"| {label} | {len(top1)} | {cells} | **{mean:.2f} +- {sd:.2f}** | {', '.join(map(str, images))} |")
print(f"\nteacher: {teacher['top1']:.2f}% top-1 on {teacher['val_images']} val images")
print("teacher quality: " + json.dumps(quality["summary"]))
print("target mass on the folder class: " + json.dumps(summary["target_mass_on_folder_class"]))
for arm in ("tl", "tlgt"):
    if "minus_plain_per_seed" in summary.get(arm, {}):
        print(f"{arm} - plain per seed: " + ", ".join(f"{d:+.2f}" for d in summary[arm]["minus_plain_per_seed"]))
(out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
