"""Issue 6's targets table, filled from the benchmark reports one device wrote (one run of `gpu_check.sh`).

    python benchmarks/targets.py                  # the newest GPU reports in benchmarks/results/, else the CPU ones
    python benchmarks/targets.py --slug h200      # one card's reports

Reads `model_<slug>.json` (eager rows: ours, ours-refop, timm), `model_gpu_compiled_d1.json` (compiled D1, used
only when it was measured on the same card) and `outlook_<slug>.json`; prints the table and writes
`targets_<slug>.md` beside them. A target whose report is missing reads "not measured", never a guess. On the CPU
reports it checks the CPU target instead: our training step no slower than timm's for every model measured.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COMPILED_D1 = "model_gpu_compiled_d1.json"


@dataclass
class Target:
    measure: str
    timm: str
    target: str
    ours: str
    met: bool | None
    """None: not measured."""


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _row(report: dict | None, impl: str, model: str, img_size: int, batch: int | None = None) -> dict | None:
    for r in (report or {}).get("rows", []):
        if (r["impl"], r["model"], r["img_size"]) == (impl, model, img_size) and batch in (None, r["batch"]):
            return r
    return None


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _at_least(measure: str, target: float, timm: str, values: list[float | None]) -> Target:
    got = [v for v in values if v is not None]
    if not got:
        return Target(measure, timm, f">= {target:,.0f}", "not measured", None)
    return Target(measure, timm, f">= {target:,.0f}", _num(max(got)), max(got) >= target)


def gpu_targets(eager: dict | None, compiled: dict | None, outlook: dict | None) -> list[Target]:
    def get(impl, model, size, batch, key, report=eager):
        row = _row(report, impl, model, size, batch)
        return row[key] if row else None

    d1 = ("volo_d1", 224, 128)
    timm_eager, timm_compiled = get("timm", *d1, "train_img_s"), get("timm", *d1, "train_img_s", compiled)
    timm_d1 = f"{_num(timm_eager)} eager / {_num(timm_compiled)} compiled"
    rows = [
        _at_least("VOLO-D1 train images/s @224, batch 128", 5000, timm_d1,
                  [get("ours", *d1, "train_img_s"), get("ours", *d1, "train_img_s", compiled)]),
        _at_least("VOLO-D5 train images/s @224, batch 64", 700, _num(get("timm", "volo_d5", 224, 64, "train_img_s")),
                  [get("ours", "volo_d5", 224, 64, "train_img_s")]),
        _at_least("VOLO-D5 train images/s @448, batch 16", 170, _num(get("timm", "volo_d5", 448, 16, "train_img_s")),
                  [get("ours", "volo_d5", 448, 16, "train_img_s")]),
        _at_least("VOLO-D1 eval images/s @224", 12000, _num(get("timm", *d1, "eval_img_s")),
                  [get("ours", *d1, "eval_img_s"), get("ours", *d1, "eval_img_s", compiled)]),
    ]  # fmt: skip
    rows.append(_outlook_target(outlook))
    pairs = [
        (r, _row(eager, "timm", r["model"], r["img_size"], r["batch"]))
        for r in (eager or {}).get("rows", [])
        if r["impl"] == "ours"
    ]
    pairs = [(o, t) for o, t in pairs if t is not None]
    if pairs:
        worst = max(pairs, key=lambda p: p[0]["mem_mib"] / p[1]["mem_mib"])
        ratio = worst[0]["mem_mib"] / worst[1]["mem_mib"]
        text = f"{ratio:.2f}x timm's at worst ({worst[0]['model']} @{worst[0]['img_size']}, {len(pairs)} models)"
        rows.append(Target("peak training memory, same batch", "timm", "lower", text, ratio < 1.0))
    else:
        rows.append(Target("peak training memory, same batch", "timm", "lower", "not measured", None))
    return rows


def _outlook_target(outlook: dict | None) -> Target:
    measure, target = "outlook attention fwd+bwd, D1 stage-1 shape", ">= 3x faster, <= 1/2 peak memory"
    rows = [r for r in (outlook or {}).get("rows", []) if r["model"] == "volo_d1" and r["level"] == "op"]
    ref = next((r for r in rows if r["impl"] == "reference"), None)
    fused = next((r for r in rows if r["impl"] == "triton"), None)
    if ref is None or fused is None:
        return Target(measure, "unfold/fold reference", target, "not measured", None)
    speed, mem = ref["fwd_bwd_ms"] / fused["fwd_bwd_ms"], fused["mem_mib"] / ref["mem_mib"]
    ours = f"{speed:.2f}x faster, {mem:.2f}x memory"
    return Target(measure, "unfold/fold reference", target, ours, speed >= 3.0 and mem <= 0.5)


def cpu_targets(eager: dict | None) -> list[Target]:
    out = []
    for r in (eager or {}).get("rows", []):
        timm = _row(eager, "timm", r["model"], r["img_size"], r["batch"]) if r["impl"] == "ours" else None
        if timm is None:
            continue
        key = "fwd_bwd_cpu_ms" if r.get("fwd_bwd_cpu_ms") and timm.get("fwd_bwd_cpu_ms") else "fwd_bwd_ms"
        measure = f"CPU {r['model']} fwd+bwd ms @{r['img_size']}, batch {r['batch']} ({key})"
        out.append(Target(measure, _num(timm[key], ",.1f"), "<= timm", _num(r[key], ",.1f"), r[key] <= timm[key]))
        step = f"CPU {r['model']} train step images/s (with AdamW) @{r['img_size']}, batch {r['batch']}"
        ours_ips, timm_ips = r["train_img_s"], timm["train_img_s"]
        out.append(Target(step, _num(timm_ips, ",.1f"), ">= timm", _num(ours_ips, ",.1f"), ours_ips >= timm_ips))
    return out or [Target("CPU training step vs timm", "n/a", "<= timm", "not measured", None)]


def kernel_gain(eager: dict | None) -> str:
    """What the fused outlook kernel gains in the whole step: ours vs `ours-refop` (bench_model --ablate-outlook)."""
    lines = ["| model | res | batch | train img/s, ours | with the unfold/fold op | gain | peak MiB, ours / op |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (eager or {}).get("rows", []):
        ref = _row(eager, "ours-refop", r["model"], r["img_size"], r["batch"]) if r["impl"] == "ours" else None
        if ref is not None:
            gain = r["train_img_s"] / ref["train_img_s"]
            lines.append(
                f"| {r['model']} | {r['img_size']} | {r['batch']} | {r['train_img_s']:,.0f} | "
                f"{ref['train_img_s']:,.0f} | {gain:.2f}x | {r['mem_mib']:,.0f} / {ref['mem_mib']:,.0f} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def newest_slug(results: Path) -> str:
    found = [(p.stat().st_mtime, p.stem[len("model_") :]) for p in results.glob("model_*.json")]
    slugs = [(t, s) for t, s in found if "_" not in s]  # model_<slug>.json only, not model_cpu_1thread.json etc.
    gpu = [x for x in slugs if x[1] != "cpu"]
    return max(gpu or slugs or [(0, "cpu")])[1]


def format_table(targets: list[Target]) -> str:
    lines = ["| measure | timm (same run) | target | ours | met |", "|---|---|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines += [f"| {t.measure} | {t.timm} | {t.target} | {t.ours} | {verdict[t.met]} |" for t in targets]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slug", help="device slug of the reports (cpu, h100, h200...); default: the newest GPU one")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the reports")
    args = parser.parse_args(argv)
    slug = args.slug or newest_slug(args.results)
    eager = _load(args.results / f"model_{slug}.json")
    if slug == "cpu":
        targets = cpu_targets(eager)
    else:
        compiled = _load(args.results / COMPILED_D1)
        if compiled is not None and compiled["environment"].get("slug") != slug:
            compiled = None  # another card's compiled run: not comparable
        targets = gpu_targets(eager, compiled, _load(args.results / f"outlook_{slug}.json"))
    env = (eager or {}).get("environment", {})
    head = f"# Issue 6 targets on {env.get('device', slug)}\n\n"
    head += f"- from: model_{slug}.json ({env.get('date', 'missing')}, commit {env.get('commit', 'n/a')})\n\n"
    out = args.results / f"targets_{slug}.md"
    table = format_table(targets)
    gain = kernel_gain(eager) if slug != "cpu" else ""
    if gain:
        table += "\n\nThe fused kernel's share of the step (`ours-refop`: ours with the unfold/fold op):\n\n" + gain
    out.write_text(head + table + "\n")
    print(table)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
