"""Turn an experiment folder (run.sh OUT) into results.json and the markdown table of README.md.

python results.py OUT > table.md
"""

import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = out / "runs"


def metrics(name: str) -> dict:
    return json.loads((runs / name / "result.json").read_text())["metrics"]


def minutes() -> dict:
    path = out / "minutes.txt"
    rows = [line.split() for line in path.read_text().splitlines()] if path.is_file() else []
    return {k: int(v) / 60 for k, v in rows}


teacher = metrics("teacher")
quality = json.loads((out / "labels" / "teacher_quality.json").read_text())
arms = {}
for arm in ("plain", "tl"):
    names = sorted(p.name for p in runs.glob(f"{arm}_s*") if (p / "result.json").is_file())
    arms[arm] = {n: metrics(n) for n in names}
mins = minutes()
summary = {
    "teacher": {"top1": teacher["top1"], "top5": teacher["top5"], "val_images": teacher["val_images"]},
    "teacher_quality": quality["summary"],
    "teacher_warnings": quality["warnings"],
    "minutes": mins,
}
print("| arm | seeds | val top-1 per seed | mean +- sd | val images |")
print("|---|---|---|---|---|")
for arm, label in (("plain", "plain labels + MixToken"), ("tl", "token labels + MixToken")):
    top1 = [m["top1"] for m in arms[arm].values()]
    if not top1:
        continue
    sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
    mean = statistics.mean(top1)
    images = {m["val_images"] for m in arms[arm].values()}
    summary[arm] = {"top1": top1, "mean": mean, "sd": sd, "runs": list(arms[arm]), "val_images": sorted(images)}
    cells = ", ".join(f"{v:.2f}" for v in top1)
    print(f"| {label} | {len(top1)} | {cells} | **{mean:.2f} +- {sd:.2f}** | {', '.join(map(str, images))} |")
print(f"\nteacher: {teacher['top1']:.2f}% top-1 on {teacher['val_images']} val images")
print("teacher quality: " + json.dumps(quality["summary"]))
(out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
