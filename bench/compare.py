"""`--compare OLD.json`: the metrics whose medians moved beyond the noise between two runs.

A metric moved when the change of its median is larger than the spread (max - min over the
repetitions) of either run, and larger than 2% (a floor, so single-repetition runs, whose
spread is zero, do not report every jitter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.suite import METRICS, NOT_COMPARED

FLOOR = 0.02


def latest(results_dir: Path, exclude: Path | None = None) -> Path | None:
    files = sorted(p for p in results_dir.glob("*.json")
                   if exclude is None or p.resolve() != exclude.resolve())
    return files[-1] if files else None


def moved(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for system, metrics in new.get("summary", {}).items():
        for key, n in metrics.items():
            o = old.get("summary", {}).get(system, {}).get(key)
            if o is None or key not in METRICS or key in NOT_COMPARED:
                continue
            delta = n["median"] - o["median"]
            noise = max(o["max"] - o["min"], n["max"] - n["min"])
            base = abs(o["median"]) or 1e-9
            if abs(delta) > noise and abs(delta) / base > FLOOR:
                lower_better = METRICS[key][2]
                better = (delta < 0) == lower_better
                rows.append({"system": system, "metric": key, "old": o["median"],
                             "new": n["median"], "change": delta / base, "noise": noise,
                             "verdict": "better" if better else "worse"})
    return sorted(rows, key=lambda r: (r["verdict"], r["system"], r["metric"]))


def render(old: dict[str, Any], new: dict[str, Any], old_path: Path, new_path: Path) -> str:
    rows = moved(old, new)
    head = (f"compare {old_path} ({old['meta']['date']}) -> {new_path} ({new['meta']['date']})\n"
            f"moved beyond the noise (|change of median| > spread of either run, and > "
            f"{FLOOR:.0%}):")
    if not rows:
        return head + "\n  nothing"
    lines = [head]
    for r in rows:
        unit = METRICS[r["metric"]][1]
        lines.append(f"  {r['verdict']:6s} {r['system']:22s} {r['metric']:22s} "
                     f"{r['old']:.4g} -> {r['new']:.4g} {unit} ({r['change']:+.1%}, "
                     f"noise {r['noise']:.3g})")
    return "\n".join(lines)
