"""Plot ``bench_inprocess.py`` logs: each run's per-round K = 2 ratios (median, 95 % interval) against the goal.

Run: ``.venv/bin/python bench/plot_inprocess.py results/graph/bench_inprocess_*_run*.txt -o docs/graph_inprocess.png``
(the figure in docs/graph.md). Runs are ordered by session (``_s<N>`` in the file name), then run number; a
vertical line separates sessions (each session ran on a machine of its own).
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


BASE_MS = re.compile(r"^  one traced parent +(?P<ms>[\d.]+) ms")


def parse(path: Path) -> dict[str, tuple[float, float, float]]:
    """``label -> (median, lo, hi)`` of one log, and ``"ms" -> (one traced parent's chunk ms,) * 3``."""
    out = {}
    for line in path.read_text().splitlines():
        base = BASE_MS.search(line)
        if base:
            out["ms"] = (float(base["ms"]),) * 3
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

    def order(p: Path) -> tuple[int, int]:
        session = re.search(r"_s(\d+)", p.name)
        run = re.search(r"run(\d+)", p.name)
        return int(session.group(1)) if session else 0, int(run.group(1)) if run else 0

    logs = sorted(args.logs, key=order)
    runs = [(x, order(p), parse(p)) for x, p in enumerate(logs)]
    fig, ax = plt.subplots(figsize=(max(9, 0.45 * len(runs) + 2), 4.2), dpi=110)
    offsets = dict(zip(SERIES.values(), (-0.22, 0.0, 0.22)))
    colours = dict(zip(SERIES.values(), ("tab:blue", "tab:orange", "tab:green")))
    for label in SERIES.values():
        xs, ms, err = [], [], [[], []]
        for x, _, values in runs:
            if label in values:
                m, lo, hi = values[label]
                xs.append(x + offsets[label])
                ms.append(m)
                err[0].append(m - lo)
                err[1].append(hi - m)
        if xs:
            ax.errorbar(xs, ms, yerr=err, fmt="o", ms=4, capsize=2, color=colours[label], label=label)
    sessions = sorted({s for _, (s, _), _ in runs})
    for s in sessions[1:]:  # a line between sessions (each session had a machine of its own)
        ax.axvline(min(x for x, (t, _), _ in runs if t == s) - 0.5, color="black", lw=0.8)
    for s in sessions:  # what one parent's chunk took there: the machines differed
        xs = [x for x, (t, _), _ in runs if t == s]
        ms = [v["ms"][0] for _, (t, _), v in runs if t == s and "ms" in v]
        if s and ms:
            ax.text((min(xs) + max(xs)) / 2, 1.02, f"session {s}: one parent {min(ms):.0f}-{max(ms):.0f} ms a chunk",
                    ha="center", fontsize=8)
    ax.axhline(args.goal, color="red", lw=1, ls="--", label=f"goal {args.goal:.2f}x")
    ax.axhline(1.44, color="grey", lw=1, ls=":", label="paper, in-process composition 1.44x")
    ax.set_xticks([x for x, _, _ in runs])
    ax.set_xticklabels([f"{s}.{n}" if s else str(n) for _, (s, n), _ in runs], fontsize=7)
    ax.set_xlabel("bench_inprocess run, session.run (200 rounds each; median of the per-round ratios, 95 % "
                  "bootstrap interval)")
    ax.set_ylabel("chunk time ratio")
    ax.set_ylim(1.0, 1.5)
    ax.set_title("K = 2 in the composer's process against one parent (2-core VMs, idle)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(f"wrote {args.output} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
