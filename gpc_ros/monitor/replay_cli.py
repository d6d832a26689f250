"""``gpc-ros replay BAG``: replay a recorded bag through checkpoints and the composer, one report per weight vector.

Writes ``report.json`` and ``report.png`` into ``--out`` (default ``replay_<bag name>/``) and prints the table.
Exit status: 0 = every weight vector within the thresholds, 1 = a threshold was crossed (listed), 2 = bad input
(bag, checkpoint, weights; one sentence on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_THRESHOLD, EXIT_BAD_INPUT = 0, 1, 2


def _parent_spec(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--parent takes NAME=CHECKPOINT_DIR, got {text!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    """The ``gpc-ros replay`` argument parser."""
    p = argparse.ArgumentParser(prog="gpc-ros replay", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3), e.g. from `gpc-ros record`")
    p.add_argument("--parent", dest="parents", type=_parent_spec, action="append", required=True,
                   metavar="NAME=CHECKPOINT", help="a parent: checkpoint folder or shipped parent name "
                                                   "(gpc_ros.policies.registry); repeat, one per parent")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", type=float, nargs="+", action="append", metavar="W",
                         help="one weight vector (one value per --parent, in order); repeat for several")
    weights.add_argument("--grid", action="store_true",
                         help="the paper's 11-weight grid for 2 parents (simplex grid of step 0.1 for more)")
    p.add_argument("--operator", default=None, choices=("convex", "linear", "mixture"),
                   help="composition operator (default: convex, or the --composer-config's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the first checkpoint's)")
    p.add_argument("--seed", type=int, default=None, help="chunk i is sampled with seed SEED + i (default 0)")
    p.add_argument("--max-chunks", type=int, default=None, help="replay at most this many chunks")
    p.add_argument("--dt-s", type=float, default=None,
                   help="step spacing of replayed chunks (default: the recorded chunks', else 0.1 s)")
    p.add_argument("--first-action-delay-s", type=float, default=None,
                   help="the composer's first_action_delay_s: observation time = chunk stamp - this (default 0.1 s, "
                        "or the --composer-config's)")
    p.add_argument("--replan-period-s", type=float, default=0.5,
                   help="decision period when the bag holds no /gpc/action_chunk (s)")
    p.add_argument("--image-topic", default="", help="colour image topic (default: the bag's only one)")
    p.add_argument("--points-topic", default="/gpc/points")
    p.add_argument("--state-topic", default="/ee_pose")
    p.add_argument("--action-topic", default="/gpc/action_chunk")
    p.add_argument("--composer-config", type=Path, default=None,
                   help="composer_node parameters file (e.g. config/composer.yaml): replay with its sampler, "
                        "operator, dt_s and seed, and its weights when --parent names equal its parents")
    p.add_argument("--driver-config", type=Path, default=None,
                   help="franka_driver YAML whose envelope.* limits to check against (default: the built-in "
                        "SafetyEnvelopeConfig, as config/franka_driver.yaml)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: replay_<bag name>)")
    th = p.add_argument_group("thresholds (exit 1 when any weight vector crosses one)")
    th.add_argument("--max-latency-s", type=float, default=None, help="95th-percentile chunk latency (s)")
    th.add_argument("--max-intervention-rate", type=float, default=None,
                    help="fraction of chunks the safety envelope would change or reject")
    th.add_argument("--max-seam-jump-m", type=float, default=None, help="largest seam jump (m)")
    th.add_argument("--max-error-m", type=float, default=None, help="mean RMSE vs recorded actions (m)")
    return p


def envelope_from_driver_yaml(path: Path):
    """The ``SafetyEnvelopeConfig`` of a franka_driver parameters file (``<node>.ros__parameters.envelope``)."""
    import yaml

    from gpc_ros.control.envelope import SafetyEnvelopeConfig

    data = yaml.safe_load(path.read_text())
    blocks = [v["ros__parameters"].get("envelope") for v in (data or {}).values()
              if isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)]
    blocks = [b for b in blocks if isinstance(b, dict)]
    if not blocks:
        raise ValueError(f"{path} has no <node>.ros__parameters.envelope block")
    known = {f.name for f in fields(SafetyEnvelopeConfig) if f.init}
    unknown = sorted(set(blocks[0]) - known)
    if unknown:
        raise ValueError(f"{path}: envelope has unknown keys {unknown} (allowed: {sorted(known)})")
    return SafetyEnvelopeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in blocks[0].items()})


def composer_from_yaml(path: Path):
    """The ``ComposerNodeConfig`` of a composer_node parameters file (the block whose parameters list parents)."""
    import yaml

    from gpc_ros.graph.composition import ComposerNodeConfig
    from gpc_ros.nodes.parameters import build_config

    data = yaml.safe_load(path.read_text()) or {}
    blocks = [v["ros__parameters"] for v in data.values() if isinstance(v, dict)
              and isinstance(v.get("ros__parameters"), dict) and "parents" in v["ros__parameters"]]
    if not blocks:
        raise ValueError(f"{path} has no <node>.ros__parameters block with the composer's 'parents'")

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    try:
        return build_config(ComposerNodeConfig, flat(blocks[0]))
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gpc-ros replay``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from gpc_ros.compose.errors import CompositionError
    from gpc_ros.compose.search import paper_grid, simplex_grid
    from gpc_ros.monitor.bag import BagError
    from gpc_ros.monitor.replay import (
        ReplayConfig,
        ReplayError,
        ReplayParent,
        ReplayThresholds,
        format_table,
        plot_report,
        replay,
    )
    from gpc_ros.monitor.replay_io import ReplayTopics, load_recording
    from gpc_ros.policies import CheckpointError, load_policy
    from gpc_ros.policies.evaluation import default_sampler

    try:
        names = [n for n, _ in args.parents]
        if len(set(names)) != len(names):
            raise ValueError(f"--parent names must be unique, got {names}")
        from gpc_ros.policies.registry import resolve_checkpoint

        folders = [(name, resolve_checkpoint(path)) for name, path in args.parents]  # a folder or a shipped name
        policies = [load_policy(path) for _, path in folders]  # their schedules choose the default sampler
        parents = [ReplayParent.from_checkpoint(name, path) for name, path in folders]
        k = len(parents)
        graph = composer_from_yaml(args.composer_config) if args.composer_config else None
        if args.grid:
            weights = paper_grid() if k == 2 else simplex_grid(k, 10)
        elif args.weights:
            weights = np.array(args.weights, dtype=np.float64)
            if weights.shape[1:] != (k,):
                raise ValueError(f"every --weights needs {k} values (one per --parent {names}), got "
                                 f"{[len(w) for w in args.weights]}")
        elif graph is not None and list(graph.parents) == names:
            weights = np.array([graph.weights], dtype=np.float64)
        else:
            weights = np.full((1, k), 1.0 / k)
        envelope = envelope_from_driver_yaml(args.driver_config) if args.driver_config else None
        thresholds = ReplayThresholds(args.max_latency_s, args.max_intervention_rate, args.max_seam_jump_m,
                                      args.max_error_m)
        sampler = default_sampler(policies, args.steps)
        operator, dt_s, seed, delay = args.operator, args.dt_s, args.seed, args.first_action_delay_s
        if graph is not None:  # the composer's settings, unless given on the command line
            sampler = graph.composer.sampler if args.steps is None else replace(
                graph.composer.sampler, num_inference_steps=args.steps)
            operator = graph.composer.operator if args.operator is None else args.operator
            dt_s = graph.dt_s if args.dt_s is None else args.dt_s
            seed = max(graph.seed, 0) if args.seed is None else args.seed
            delay = graph.first_action_delay_s if delay is None else delay
        config = ReplayConfig(dt_s=dt_s, replan_period_s=args.replan_period_s, max_chunks=args.max_chunks,
                              first_action_delay_s=0.1 if delay is None else delay,
                              seed=seed or 0, operator=operator or "convex", sampler=sampler,
                              thresholds=thresholds, **({"envelope": envelope} if envelope else {}))
        topics = ReplayTopics(args.image_topic, args.points_topic, args.state_topic, args.action_topic)
        recording = load_recording(args.bag, {s for rp in parents for s in rp.needs}, topics)
        report = replay(recording, parents, weights, config, progress=sys.stderr.isatty())
    except (BagError, CheckpointError, ReplayError, CompositionError, ValueError, OSError) as exc:
        print(f"gpc-ros replay: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report["checkpoints"] = {n: str(p) for n, p in args.parents}  # as given (folder or shipped name)
    out = args.out or Path(f"replay_{args.bag.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "report.png", lambda tmp: plot_report(report, tmp))
    _write_atomic(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    print(format_table(report))
    print(f"report: {out / 'report.json'}, plot: {out / 'report.png'}")
    return EXIT_THRESHOLD if report["violations"] else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
