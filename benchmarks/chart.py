"""Draw the performance chart of the docs from the benchmarks' JSON output.

Usage::

    python benchmarks/echo.py --json echo.json
    python benchmarks/fanout.py --json fanout.json
    python benchmarks/chart.py echo.json fanout.json -o docs/performance.png

Left: echo, server CPU µs per round trip. Right: fan-out, server CPU µs per
delivery. One bar per server (median over the rounds, whiskers min-max); lower is
better. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

LABELS = {
    "aiohttp": "plain aiohttp",
    "upgrade": "aiohttp-upgrade (def message)",
    "upgrade-async": "aiohttp-upgrade (async def message)",
    "bun": "Bun",
}
COLORS = {
    "aiohttp": "#9e9e9e",
    "upgrade": "#1f77b4",
    "upgrade-async": "#6baed6",
    "bun": "#f4a261",
}


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def bars(
    ax: Axes,
    groups: Sequence[str],
    values: dict[tuple[str, str], list[float]],
    title: str,
    ylabel: str,
) -> None:
    """Grouped bars: one group per x label, one bar per server present."""
    impls = [impl for impl in LABELS if any(key[1] == impl for key in values)]
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        xs, heights, low, high = [], [], [], []
        for g, group in enumerate(groups):
            runs = values.get((group, impl))
            if not runs:
                continue
            median = statistics.median(runs)
            xs.append(g + (i - (len(impls) - 1) / 2) * width)
            heights.append(median)
            low.append(median - min(runs))
            high.append(max(runs) - median)
        ax.bar(
            xs,
            heights,
            width,
            yerr=[low, high],
            capsize=3,
            label=LABELS[impl],
            color=COLORS[impl],
        )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def echo_panel(ax: Axes, document: dict[str, Any]) -> None:
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in document["results"]:
        values[f"{r['clients']} client(s)", r["impl"]].append(r["server_us"])
    groups = sorted({key[0] for key in values}, key=lambda g: int(g.split()[0]))
    bars(ax, groups, values, "Echo, 32-byte messages", "server CPU µs / round trip")


def fanout_panel(ax: Axes, document: dict[str, Any]) -> None:
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in document["results"]:
        values[f"N={r['n']} {r['mode']}", r["impl"]].append(r["server_us"])
    groups = sorted(
        {key[0] for key in values},
        key=lambda g: (int(g.split()[0][2:]), g.split()[1]),
    )
    bars(ax, groups, values, "Fan-out to N sockets", "server CPU µs / delivery")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("echo", help="JSON written by echo.py --json")
    parser.add_argument("fanout", help="JSON written by fanout.py --json")
    parser.add_argument("-o", "--output", default="performance.png")
    args = parser.parse_args()
    echo, fanout = load(args.echo), load(args.fanout)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    echo_panel(left, echo)
    fanout_panel(right, fanout)
    left.legend(fontsize=8)  # the echo panel has every server, async def included
    m = echo["machine"]
    figure.suptitle(
        f"Server CPU time per message, lower is better "
        f"(Python {m['python']}, aiohttp {m['aiohttp']}, {m['cpu']}, "
        f"server pinned to CPU {m['server_cpu']}, {m['date'][:10]})",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
