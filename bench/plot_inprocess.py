"""Plot ``bench_inprocess.py`` logs: each run's per-round K = 2 ratios (median, 95 % interval) against the goal.

Run: ``.venv/bin/python bench/plot_inprocess.py results/graph/bench_inprocess_*_run*.txt -o docs/graph_inprocess.png``
(the figure in docs/graph.md, session 19). Runs are ordered by the number in their file name.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

LINE = re.compile(r"per round, (?P<case>.+?) / (?P<base>.+?): median (?P<m>[\d.]+)x, 95 % interval "
                  r"(?P<lo>[\d.]+)-(?P<hi>[\d.]+)x")
SERIES = {  # (case, base) -> label
    ("K=2 Composer, spinning workers", "one traced parent"): "plain Composer K=2 / one traced parent",
    ("K=2 graph, in-process hosts, spinning workers", "one traced parent"): "graph K=2 / one traced parent",
    ("K=2 graph, in-process hosts, spinning workers", "one traced parent, graph (one in-process host)"):
        "graph K=2 / graph with one host",
}


def parse(path: Path) -> dict[str, tuple[float, float, float]]:
    """``label -> (median, lo, hi)`` of one log."""
    out = {}
    for line in path.read_text().splitlines():
        m = LINE.search(line)
        if m and (m["case"], m["base"]) in SERIES:
            out[SERIES[(m["case"], m["base"])]] = (float(m["m"]), float(m["lo"]), float(m["hi"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--goal", type=float, default=1.15)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def run_number(p: Path) -> int:
        m = re.search(r"run(\d+)", p.name)
        return int(m.group(1)) if m else 0

    logs = sorted(args.logs, key=run_number)
    runs = [(run_number(p), parse(p)) for p in logs]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    offsets = dict(zip(SERIES.values(), (-0.22, 0.0, 0.22)))
    colours = dict(zip(SERIES.values(), ("tab:blue", "tab:orange", "tab:green")))
    for label in SERIES.values():
        xs, ms, err = [], [], [[], []]
        for n, values in runs:
            if label in values:
                m, lo, hi = values[label]
                xs.append(n + offsets[label])
                ms.append(m)
                err[0].append(m - lo)
                err[1].append(hi - m)
        if xs:
            ax.errorbar(xs, ms, yerr=err, fmt="o", ms=4, capsize=2, color=colours[label], label=label)
    ax.axhline(args.goal, color="red", lw=1, ls="--", label=f"goal {args.goal:.2f}x")
    ax.axhline(1.44, color="grey", lw=1, ls=":", label="paper, in-process composition 1.44x")
    ax.set_xticks([n for n, _ in runs])
    ax.set_xlabel("bench_inprocess run (200 rounds each; median of the per-round ratios, 95 % bootstrap interval)")
    ax.set_ylabel("chunk time ratio")
    ax.set_ylim(1.0, 1.5)
    ax.set_title("K = 2 in the composer's process against one parent (2-core VM, idle)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(f"wrote {args.output} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
