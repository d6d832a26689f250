"""The benchmark report: merged table, success-vs-weight plot per pair, the bandit's episodes-to-best."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from gpc_ros.benchmark.plan import Arm
from gpc_ros.benchmark.results import (
    ArmResult,
    Paired,
    agreement,
    episode_rows,
    markdown_agreement,
    markdown_paired,
    markdown_table,
    paired,
    read_rows,
    table,
)
from gpc_ros.benchmark.runner import bandit_arms, episodes_to_best, grid_arm_ids, grid_best_ties


def _order(arm_ids: list[str]) -> list[Arm]:
    arms = [Arm.parse(a) for a in arm_ids]
    op_rank = {"convex": 0, "mixture": 1, "linear": 2}
    return sorted(arms, key=lambda a: (not a.alone, a.pair, op_rank[a.operator], -a.weights[0]))


def plot_pair(results: Sequence[ArmResult], pair: tuple[str, str], path: Path) -> bool:
    """Plot success rate vs ``w_A`` (convex arms, 95 % Wilson intervals), the parents alone as bands.

    Returns False (and writes nothing) if the pair has no convex arm measured.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {r.arm: r for r in results}
    points = []
    for r in results:
        arm = Arm.parse(r.arm)
        if not arm.alone and arm.operator == "convex" and arm.parents == pair and r.episodes:
            points.append((arm.weights[0], r))
    if not points:
        return False
    points.sort(key=lambda p: p[0])
    w = [p[0] for p in points]
    rate = [p[1].rate for p in points]
    err = [[p[1].rate - p[1].wilson_low for p in points], [p[1].wilson_high - p[1].rate for p in points]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.errorbar(w, rate, yerr=err, fmt="o-", capsize=3, label=f"GPC convex, {pair[0]}+{pair[1]}")
    for name, style in zip(pair, ("--", ":")):
        alone = by_id.get(name)
        if alone is not None and alone.episodes:
            ax.axhline(alone.rate, ls=style, color="gray", label=f"{name} alone ({alone.episodes} ep)")
            ax.axhspan(alone.wilson_low, alone.wilson_high, color="gray", alpha=0.12)
    n = sorted({p[1].episodes for p in points})
    ax.set_xlabel(f"w_{pair[0]}  (w_{pair[1]} = 1 - w_{pair[0]})")
    ax.set_ylabel("success rate (95 % Wilson)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.05, 1.05)
    counts = f"{n[0]}" if n[0] == n[-1] else f"{n[0]}–{n[-1]}"
    ax.set_title(f"push_red: success vs weight ({counts} episodes per weight)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def bandit_summary(directories: Sequence[Path], results: Sequence[ArmResult],
                   parents_as_endpoints: bool = False) -> list[dict]:
    """Per bandit file: episodes run, its current best arm, and its episodes-to-best.

    Episodes-to-best: after how many episodes it settled on the grid's best arm (the grid spent ``grid_episodes``).
    ``parents_as_endpoints``: see :func:`~gpc_ros.benchmark.runner.grid_best`.
    """
    out = []
    for d in directories:
        for path in sorted(Path(d).glob("bandit.*.jsonl")):
            rows = read_rows(path)
            if not rows:
                continue
            pair = tuple(rows[0]["parents"])
            seed = int(rows[0].get("search_seed", 0))
            ties = grid_best_ties(results, pair, parents_as_endpoints)
            ids = grid_arm_ids(results, pair, parents_as_endpoints)
            entry = {"pair": "+".join(pair), "episodes": len(rows), "search_seed": seed,
                     "grid_best": bandit_arms(pair)[ties[0]].id if ties else None,
                     "grid_best_tied_with": [bandit_arms(pair)[i].id for i in ties[1:]],
                     "grid_episodes": sum(r.episodes for r in results if r.arm in ids),
                     "endpoints_from_parents": sorted(a for a in ids if a in pair),
                     "episodes_to_grid_best": episodes_to_best(rows, pair, ties, seed) if ties else None}
            from gpc_ros.benchmark.runner import replay_search

            search = replay_search(rows, pair, seed)
            b = search.best()
            entry["bandit_best"] = bandit_arms(pair)[b.index].id
            entry["bandit_best_successes"], entry["bandit_best_trials"] = b.successes, b.trials
            out.append(entry)
    return out


def paired_with_best_parent(rows: Sequence[dict], arms: Sequence[Arm], results: Sequence[ArmResult]) -> list[Paired]:
    """Every composed arm against the better (higher rate) of its parents alone, where that parent was measured."""
    rate = {r.arm: r.rate for r in results if r.episodes}
    out = []
    for arm in arms:
        if arm.alone:
            continue
        alone = [p for p in arm.parents if p in rate]
        if alone:
            best = max(alone, key=lambda p: rate[p])
            out.append(paired(rows, arm.id, best))
    return out


def report(directories: Sequence[Path], plots: Path | None = None, json_path: Path | None = None,
           parents_as_endpoints: bool = False, rerun: Sequence[Path] = ()) -> str:
    """Markdown: the merged table (every arm measured), bandit lines; writes plots / JSON if asked.

    ``parents_as_endpoints``: the parents alone stand for the grid's unmeasured endpoints (see
    :func:`~gpc_ros.benchmark.runner.grid_best`). ``rerun``: folders of the same benchmark on other seeds; each arm
    they share with the table is compared with it (:func:`~gpc_ros.benchmark.results.agreement`).
    """
    rows = episode_rows(directories)
    agreements = []
    if rerun:
        episode_rows([*directories, *rerun])  # the same benchmark (raises otherwise)
        agreements = agreement(rows, episode_rows(rerun))
    arms = _order(list(dict.fromkeys(r["arm"] for r in rows)))
    results = table(rows, arms)
    lines = [markdown_table(results), ""]
    pairs = list(dict.fromkeys(a.parents for a in arms if not a.alone))
    comparisons = paired_with_best_parent(rows, arms, results)
    if comparisons:
        lines += ["Each composition against the better of its parents alone, on the seeds both ran:", "",
                  markdown_paired(comparisons), ""]
    if plots is not None:
        for pair in pairs:
            path = plots / f"success_vs_weight_{pair[0]}+{pair[1]}.png"
            if plot_pair(results, pair, path):
                lines.append(f"plot: {path}")
    if rerun:
        lines += ["The same arms re-run on other seeds:", "", markdown_agreement(agreements), ""]
    bandits = bandit_summary(directories, results, parents_as_endpoints)
    for b in bandits:
        best_word = "the grid's best" + (" (or an arm tied with it)" if b["grid_best_tied_with"] else "")
        settled = (f"settled on {best_word} after {b['episodes_to_grid_best']} episodes"
                   if b["episodes_to_grid_best"] is not None else f"not settled on {best_word} (yet)")
        tied = f", tied with {', '.join(b['grid_best_tied_with'])}" if b["grid_best_tied_with"] else ""
        stand_in = (f", the parents alone {' and '.join(b['endpoints_from_parents'])} standing for its endpoints"
                    if b["endpoints_from_parents"] else "")
        lines.append(f"bandit {b['pair']}: {b['episodes']} episodes, its best {b['bandit_best']} "
                     f"({b['bandit_best_successes']}/{b['bandit_best_trials']}); grid best {b['grid_best']}{tied} "
                     f"({b['grid_episodes']} grid episodes{stand_in}); {settled}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"arms": [asdict(r) | {"rate": r.rate} for r in results],
                                         "paired_with_best_parent": [asdict(c) for c in comparisons],
                                         "bandits": bandits,
                                         "rerun_agreement": [{"arm": a.arm, "rerun": asdict(a.rerun) | {
                                             "rate": a.rerun.rate}, "rerun_inside": a.rerun_inside,
                                             "overlap": a.overlap} for a in agreements]}, indent=1) + "\n")
    return "\n".join(lines)
