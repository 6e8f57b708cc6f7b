"""PNG plots of a run: latency percentiles and throughput per system (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PERCENTILES = ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms")
COLOURS = {"direct": "#7f7f7f", "meshctl-mtls": "#d62728", "meshctl-plain": "#ff9896",
           "haproxy-tls": "#1f77b4", "haproxy-plain": "#9ecae1", "pyrelay-tls": "#2ca02c"}


def _kind(name: str) -> str:
    """The colour key: the system without its variant and its topology (`netns-`)."""
    name = name.removeprefix("netns-")
    return name if name == "direct" else name.rsplit("-", 1)[0]


def _hatch(name: str) -> str | None:
    return ("." if name.startswith("netns-") else "") + ("//" if name.endswith("-tcp") else "") \
        or None


def write(result: dict[str, Any], out: Path) -> list[Path] | str:
    """Write the plots into `out`; return their paths, or why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plots"
    out.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    names = list(summary)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=90)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        med = [summary[name][p]["median"] for p in PERCENTILES]
        lo = [m - summary[name][p]["min"] for m, p in zip(med, PERCENTILES, strict=True)]
        hi = [summary[name][p]["max"] - m for m, p in zip(med, PERCENTILES, strict=True)]
        xs = [x + (i - (len(names) - 1) / 2) * width for x in range(len(PERCENTILES))]
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=1.5, label=name,
               error_kw={"elinewidth": 0.7, "ecolor": "#444444"},
               color=COLOURS.get(_kind(name)),
               hatch=_hatch(name), edgecolor="white", linewidth=0.3)
    ax.set_xticks(range(len(PERCENTILES)), [p.removesuffix("_ms") for p in PERCENTILES])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    rate = result["settings"]["rate"]
    ax.set_title(f"Latency at {rate} req/s, corrected for coordinated omission "
                 f"(median, bars: min-max)", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=90)
    med = [summary[n]["max_rps"]["median"] for n in names]
    err = [[m - summary[n]["max_rps"]["min"] for m, n in zip(med, names, strict=True)],
           [summary[n]["max_rps"]["max"] - m for m, n in zip(med, names, strict=True)]]
    ax.barh(names, med, xerr=err, capsize=2,
            color=[COLOURS.get(_kind(n), "#333333") for n in names])
    for y, m in enumerate(med):
        ax.text(m, y, f" {m:,.0f}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("requests/s (closed loop, 16 connections; both proxy hops share one core)")
    ax.set_title("Throughput per system (median, bars: min-max)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    paths.append(out / "throughput.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths
