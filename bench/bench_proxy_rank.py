"""Offline proxy vs benchmark success rate: does replay's error against demonstrations rank weights as success does?

1. held-out demonstration episodes -> one bag each (gpc_ros.nodes.dataset_bag; skipped when the bag exists);
2. every bag replayed (gpc_ros.monitor.replay, the code behind ``gpc-ros replay``) through the two parents for the
   benchmark's weight vectors; the proxy of a weight = mean over all replayed chunks of the RMSE (m) between the
   composed chunk's positions and the demonstrated ones;
3. the benchmark's success rates per weight (results folders), with Wilson intervals and n;
4. Spearman(-proxy, success rate), a bootstrap of it (held-out and benchmark episodes resampled), Fisher's exact
   test for each pair of arms.

    PYTHONPATH=$PWD nice -n 10 python bench/bench_proxy_rank.py --results /work/data/full/bench_rgb_pcd \
        --bags /tmp/push_red_val_bags --out proxy_rank.json

Prints a markdown table and writes everything to --out (JSON). See docs/monitoring.md, "Offline proxy vs success
rate".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

#: (w_rgb, w_pcd) of the benchmark's arms (gpc_ros.benchmark: rgb alone, convex 0.75/0.5/0.25, pcd alone).
WEIGHTS = ((1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0))


def arm_weight(row: dict) -> tuple[float, float] | None:
    """(w_rgb, w_pcd) of a benchmark results row, None for an arm of other parents."""
    parents, weights = list(row["parents"]), [float(w) for w in row["weights"]]
    if parents == ["rgb"]:
        return 1.0, 0.0
    if parents == ["pcd"]:
        return 0.0, 1.0
    if parents == ["rgb", "pcd"] and row.get("operator", "convex") == "convex":
        return weights[0], weights[1]
    return None


def replay_proxy(args) -> tuple:
    """Bags of the held-out episodes replayed for WEIGHTS: (episodes, checkpoints, sampler, per-episode mean error
    (E, W), pooled mean error per weight, chunks per weight)."""
    from dataclasses import asdict

    from tqdm import tqdm

    from gpc_ros.monitor.replay import ReplayConfig, ReplayParent, replay
    from gpc_ros.monitor.replay_io import load_recording
    from gpc_ros.nodes.dataset_bag import dataset_to_bags, parse_episodes, read_meta
    from gpc_ros.policies import load_policy
    from gpc_ros.policies.evaluation import default_sampler
    from gpc_ros.policies.registry import resolve_checkpoint

    episodes = parse_episodes(args.episodes, read_meta(args.dataset)["num_episodes"])
    bags = [args.bags / f"episode_{e:06d}" for e in episodes]
    todo = [e for e, b in zip(episodes, bags) if not b.exists()]
    if todo:
        dataset_to_bags(args.dataset, args.bags, todo, progress=True)
    folders = [resolve_checkpoint(args.rgb), resolve_checkpoint(args.pcd)]
    sampler = default_sampler([load_policy(f) for f in folders], args.steps)
    parents = [ReplayParent.from_checkpoint("rgb", folders[0]), ReplayParent.from_checkpoint("pcd", folders[1])]
    config = ReplayConfig(dt_s=None, max_chunks=args.max_chunks, seed=args.seed, sampler=sampler)
    weights = np.array(WEIGHTS)
    per_episode, pooled = [], [[] for _ in WEIGHTS]
    for bag in tqdm(bags, desc="replay held-out episodes", unit="episode"):
        report = replay(load_recording(bag, {"image", "points", "state"}), parents, weights, config)
        assert report["error_source"] == "recorded_chunks", report["error_source"]
        errs = [row["per_chunk"]["error_m"] for row in report["results"]]
        per_episode.append([float(np.mean(e)) for e in errs])
        for i, e in enumerate(errs):
            pooled[i].extend(e)
    proxy = [float(np.mean(e)) for e in pooled]
    return (episodes, [str(f) for f in folders], asdict(sampler), per_episode, proxy, len(pooled[0]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=Path("/work/data/push_red"))
    p.add_argument("--episodes", default="180:200", help="held-out episodes (A:B half-open, or N,M,...)")
    p.add_argument("--bags", type=Path, required=True, help="folder of the per-episode bags (written if missing)")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="benchmark results folder(s)")
    p.add_argument("--rgb", default="push_red_diffusion_rgb")
    p.add_argument("--pcd", default="push_red_dp3_pcd")
    p.add_argument("--steps", type=int, default=10, help="sampler steps (the benchmark's sampler_steps)")
    p.add_argument("--max-chunks", type=int, default=None, help="per episode bag")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    p.add_argument("--out", type=Path, default=Path("proxy_rank.json"))
    p.add_argument("--proxy-from", type=Path, default=None,
                   help="reuse the proxy of an earlier --out JSON (no replay): only the benchmark side is re-read")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from gpc_ros.benchmark.results import episode_rows
    from gpc_ros.compose.search import wilson_interval
    from gpc_ros.monitor.proxy_rank import bootstrap_spearman, pairwise_tests, spearman

    torch.set_num_threads(1)
    if args.proxy_from is not None:
        old = json.loads(args.proxy_from.read_text())
        per_episode = old["proxy_by_episode_m"]
        proxy = [t["proxy_error_m"] for t in old["table"]]
        chunks = old["table"][0]["proxy_chunks"]
        episodes, folders, sampler = old["held_out_episodes"], list(old["checkpoints"].values()), old["sampler"]
    else:
        episodes, folders, sampler, per_episode, proxy, chunks = replay_proxy(args)

    rows = episode_rows(args.results)
    outcomes: dict[tuple[float, float], list[bool]] = {tuple(w): [] for w in WEIGHTS}
    for row in rows:
        w = arm_weight(row)
        if w in outcomes:
            outcomes[w].append(bool(row["success"]))
    missing = [w for w, o in outcomes.items() if not o]
    if missing:
        print(f"bench_proxy_rank: no benchmark episodes for weights {missing} in {args.results}", file=sys.stderr)
        return 2
    table = []
    for (w, o), err, ep in zip(outcomes.items(), proxy, np.array(per_episode).T):
        s, n = int(sum(o)), len(o)
        low, high = wilson_interval(s, n)
        table.append({"w_rgb": w[0], "w_pcd": w[1], "proxy_error_m": err, "proxy_chunks": chunks,
                      "proxy_error_sd_over_episodes_m": float(np.std(ep, ddof=1)),
                      "successes": s, "episodes": n, "success_rate": s / n, "wilson_low": low, "wilson_high": high})
    rates = [t["success_rate"] for t in table]
    rho = spearman([-e for e in proxy], rates)
    boot = bootstrap_spearman(np.array(per_episode), list(outcomes.values()), args.draws, seed=args.seed)
    pairs = pairwise_tests({f"w_rgb={t['w_rgb']}": (t["successes"], t["episodes"]) for t in table})
    out = {"benchmark_episodes": len(rows), "dataset": str(args.dataset), "held_out_episodes": episodes,
           "bags": str(args.bags), "results": [str(r) for r in args.results],
           "checkpoints": {"rgb": str(folders[0]), "pcd": str(folders[1])},
           "sampler": sampler, "seed": args.seed, "max_chunks_per_episode": args.max_chunks,
           "table": table, "spearman_rho": rho, "bootstrap": boot, "pairs": pairs,
           "proxy_by_episode_m": per_episode}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("| w_rgb | w_pcd | proxy error (mm, lower = better) | success | 95 % Wilson | n |")
    print("|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['w_rgb']:.2f} | {t['w_pcd']:.2f} | {1e3 * t['proxy_error_m']:.1f} | "
              f"{100 * t['success_rate']:.0f} % ({t['successes']}/{t['episodes']}) | "
              f"[{100 * t['wilson_low']:.0f}, {100 * t['wilson_high']:.0f}] % | {t['episodes']} |")
    print(f"Spearman rho(-proxy error, success rate) = {rho:.3f} over {len(table)} weights; bootstrap "
          f"95 % [{boot['rho_p2_5']:.2f}, {boot['rho_p97_5']:.2f}], P(rho > 0) = {boot['fraction_positive']:.2f}")
    print("pairs with Fisher p < 0.05: " + (", ".join(f"{q['a']} vs {q['b']} (p={q['fisher_p']:.3f})"
                                                       for q in pairs if q["fisher_p"] < 0.05) or "none"))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
