r"""``gpc-ros benchmark``: does the composed policy beat both parents on the simulated cell (docs/results.md)?

    gpc-ros benchmark run --parent rgb=push_red_diffusion_rgb --parent pcd=push_red_dp3_pcd \\
        --arms parents grid:rgb+pcd --seeds 100000:100100 --out results/push_red [--shard 0/4]
    gpc-ros benchmark bandit --parent rgb=... --parent pcd=... --pair rgb+pcd --episodes 200 \\
        --seeds 300000:300200 --out results/push_red
    gpc-ros benchmark report --results results/push_red [more folders] --plots docs/results
    gpc-ros benchmark latency --parent rgb=... --parent pcd=... --pair rgb+pcd --dataset DIR
    gpc-ros benchmark ship --checkpoint RUN/checkpoint --name NAME --dataset DIR --command "gpc-ros train ..."

``run`` evaluates arms (parents alone, weight grids, operators; see :mod:`gpc_ros.benchmark.plan`) on fixed layout
seeds, one episode per ``(arm, seed)``, through the real path (:mod:`gpc_ros.benchmark.episode`); each finished
episode is appended to the results folder at once, so the same command continues after a kill. ``--shard i/n``
runs every n-th episode; shards write their own files and ``report`` merges folders. ``bandit`` runs the online
Thompson weight search; ``report`` prints the table (success, 95 % Wilson interval, episodes, wall time), the
bandit's episodes-to-best and writes a success-vs-weight plot per pair; ``latency`` times one chunk per parent
alone and composed (K = 2) side by side in one process and prints ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from gpc_ros.benchmark.plan import Arm, parse_arms, parse_seeds, parse_shard

FORMAT = "gpc_ros.benchmark"
FORMAT_VERSION = 1


def _parent_spec(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec or set(name) & set("+@:,="):
        raise argparse.ArgumentTypeError(f"--parent must be NAME=CHECKPOINT (a shipped name or a checkpoint folder; "
                                         f"NAME without '+@:,'); got {text!r}")
    return name, spec


def _pair(text: str) -> tuple[str, str]:
    names = text.split("+")
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"--pair must be A+B (two different parent names); got {text!r}")
    return names[0], names[1]


def _checked(parse):
    def inner(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return inner


def _add_parents(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parent", action="append", type=_parent_spec, required=True, metavar="NAME=CHECKPOINT",
                   help="a parent: NAME used in arm specs, CHECKPOINT a shipped name (gpc_ros.policies.registry) "
                        "or a checkpoint folder; repeat per parent")


def _add_episode_options(p: argparse.ArgumentParser) -> None:
    from gpc_ros.benchmark.episode import EpisodeSettings

    d = EpisodeSettings()
    p.add_argument("--out", type=Path, required=True, help="results folder (created; resumed)")
    p.add_argument("--seeds", type=_checked(parse_seeds), required=True,
                   help="episode layout seeds, START:STOP or a,b,c (keep them apart from the demo seeds)")
    p.add_argument("--sampler-steps", type=int, default=d.sampler_steps, help="denoising steps per chunk")
    p.add_argument("--replan-every", type=int, default=d.replan_every, help="steps executed per chunk")
    p.add_argument("--time-limit", type=float, default=None, help="override the task's time limit (sim s)")
    p.add_argument("--threads", type=int, default=d.torch_threads, help="torch threads")
    p.add_argument("--pace", choices=("fast", "realtime"), default="fast", help="simulator pace")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The ``gpc-ros benchmark`` parser (verbs run, bandit, report, latency, ship)."""
    parser = argparse.ArgumentParser(prog="gpc-ros benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="evaluate arms on fixed seeds (resumable, --shard i/n)")
    _add_parents(run)
    run.add_argument("--arms", nargs="+", required=True,
                     help="arm specs: parents, grid:A+B, grid5:A+B, weights:A+B@w,..., operators:A+B@w, arm ids")
    run.add_argument("--shard", type=_checked(parse_shard), default=(0, 1), help="run only shard i of n (i/n)")
    run.add_argument("--max-episodes", type=int, default=None, help="stop after this many new episodes")
    _add_episode_options(run)
    bandit = sub.add_parser("bandit", help="online Thompson weight search over the paper's grid (resumable)")
    _add_parents(bandit)
    bandit.add_argument("--pair", type=_pair, required=True, help="A+B")
    bandit.add_argument("--episodes", type=int, required=True, help="episodes in all")
    bandit.add_argument("--search-seed", type=int, default=0, help="seed of the search's own draws")
    _add_episode_options(bandit)
    report = sub.add_parser("report", help="merge results folders into the table, plots and bandit summary")
    report.add_argument("--results", type=Path, nargs="+", required=True, help="results folders (shards)")
    report.add_argument("--plots", type=Path, default=None, help="write success_vs_weight_<pair>.png here")
    report.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    report.add_argument("--parents-as-endpoints", action="store_true",
                        help="count each parent alone as its pair's grid endpoint (w = 1 / 0) when that endpoint was "
                             "not measured; valid only where the parent's sampler is the pair's (docs/results.md)")
    report.add_argument("--rerun", type=Path, nargs="+", default=(),
                        help="folders of the same benchmark re-run on other seeds: each arm they share with the table "
                             "is compared with it (re-run rate inside the table's 95 %% interval; intervals overlap)")
    latency = sub.add_parser("latency", help="ms per chunk: each parent alone and composed, as ratios")
    _add_parents(latency)
    latency.add_argument("--pair", type=_pair, required=True)
    latency.add_argument("--dataset", type=Path, required=True, help="episode dataset giving the observation")
    latency.add_argument("--repeats", type=int, default=30)
    latency.add_argument("--sampler-steps", type=int, default=10)
    latency.add_argument("--threads", type=int, default=1)
    latency.add_argument("--out", type=Path, default=None, help="write latency.json here")
    ship = sub.add_parser("ship", help="copy a trained checkpoint to parents/<name>/ with provenance + reference")
    ship.add_argument("--checkpoint", type=Path, required=True, help="the run's checkpoint folder")
    ship.add_argument("--name", required=True, help="shipped name (found by gpc_ros.policies.registry)")
    ship.add_argument("--dataset", type=Path, required=True, help="the (frozen) dataset it was trained on")
    ship.add_argument("--command", required=True, help="the exact command that regenerates the checkpoint")
    ship.add_argument("--dest", type=Path, default=Path("parents"), help="folder of shipped parents")
    ship.add_argument("--code-commit", default=None, help="git commit of the code the run trained with")
    return parser


def load_parents(specs: list[tuple[str, str]]) -> tuple[dict, dict]:
    """NAME=SPEC pairs -> ({name: policy}, {name: identity of the checkpoint})."""
    from gpc_ros.policies.checkpoint import read_description
    from gpc_ros.policies.registry import load_named_policy, resolve_checkpoint

    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"--parent names must be distinct; got {names}")
    policies, identity = {}, {}
    for name, spec in specs:
        folder = resolve_checkpoint(spec)
        policies[name] = load_named_policy(folder)
        meta = read_description(folder)
        identity[name] = {"checkpoint": spec if "/" not in spec else folder.name, "policy_type": meta["policy_type"],
                          "modality": meta["modality"], "weights_sha256": meta["weights"]["sha256"]}
    return policies, identity


def _settings(args):
    from gpc_ros.benchmark.episode import EpisodeSettings

    return EpisodeSettings(sampler_steps=args.sampler_steps, replan_every=args.replan_every,
                           time_limit_s=args.time_limit, torch_threads=args.threads)


def _identity(args, parents_identity: dict, settings) -> dict:
    from gpc_ros.sim.cell import CellConfig

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "parents": parents_identity,
            "cell": asdict(CellConfig(pace=args.pace)), "settings": asdict(settings)}


def _open_sim(policies, settings, pace):
    from gpc_ros.benchmark.episode import SimBackend
    from gpc_ros.sim.cell import CellConfig

    @contextlib.contextmanager
    def opener():
        with SimBackend(policies, settings, CellConfig(pace=pace)) as backend:
            yield backend.run
    return opener


def _report(args) -> int:
    from gpc_ros.benchmark.report import report

    print(report(args.results, args.plots, args.json, args.parents_as_endpoints, args.rerun))
    return 0


def _latency(args) -> int:
    from gpc_ros.benchmark.latency import measure

    policies, _ = load_parents(args.parent)
    result = measure(policies, args.pair, args.dataset, args.repeats, args.sampler_steps, args.threads)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latency.json").write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gpc-ros benchmark VERB ...``; exit 0, or 2 with one sentence on stderr for bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gpc_ros.benchmark.results import ResultsMismatchError, open_results
    from gpc_ros.benchmark.runner import run_arms, run_bandit

    try:
        if args.verb == "report":
            return _report(args)
        if args.verb == "latency":
            return _latency(args)
        if args.verb == "ship":
            from gpc_ros.benchmark.ship import ship
            from gpc_ros.sim.collect import dataset_hash

            print(ship(args.checkpoint, args.name, args.dataset, args.command, args.dest, dataset_hash(args.dataset),
                       args.code_commit))
            return 0
        policies, parents_identity = load_parents(args.parent)
        settings = _settings(args)
        if args.verb == "run":  # every input checked before anything is written
            arms: list[Arm] = parse_arms(args.arms, list(policies))
        else:
            for name in args.pair:
                if name not in policies:
                    raise ValueError(f"--pair names unknown parent {name!r}; the parents are {list(policies)}")
        out = open_results(args.out, _identity(args, parents_identity, settings))
        opener = _open_sim(policies, settings, args.pace)
        t0 = time.monotonic()
        if args.verb == "run":
            n = run_arms(out, arms, args.seeds, opener, args.shard, args.max_episodes, not args.no_progress)
            print(f"{out}: {n} new episodes in {(time.monotonic() - t0) / 60:.1f} min "
                  f"(shard {args.shard[0]}/{args.shard[1]}, {len(arms)} arms x {len(args.seeds)} seeds)")
        else:
            search = run_bandit(out, args.pair, args.seeds, args.episodes, opener, args.search_seed,
                                not args.no_progress)
            best = search.best()
            print(f"{out}: bandit {'+'.join(args.pair)} after {int(search.trials.sum())} episodes: best w = "
                  f"{best.weights} ({best.successes}/{best.trials})")
    except (ValueError, FileNotFoundError, ResultsMismatchError) as exc:
        print(f"gpc-ros benchmark: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
