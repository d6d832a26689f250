"""``gpc-ros demo``: the whole graph on the simulated push_red cell with the shipped parents (docs/demo.md).

Starts the graph of ``gpc-ros bringup --sim`` (cell, clock, camera, point cloud, one policy host per parent, the
composer, the driver) plus ``gpc-ros record``, runs ``--episodes`` seeded episodes (reset through the cell's control
channel) and prints per episode: success, duration, chunks, median observation-to-chunk latency, envelope
interventions; ``--compare`` repeats the seeds with each parent alone. Then writes to the output folder: the MCAP
recording, its replay report (``gpc-ros replay``), a video of the front camera with each parent's and the composed
TCP path drawn over it, and a plot of executed vs predicted chunks. Exit status: 0 when the graph ran (whatever the
task outcome), 1 when it failed (a process died, no chunk arrived; the message names it), 2 for bad options, 130
after Ctrl-C. Every process it started is stopped in every case. ``--analytic``: the earlier two-goal demo.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from gpc_ros.demo.session import DemoConfig, DemoSession, GraphFailedError, write_json

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_GRAPH_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The ``gpc-ros demo`` argument parser."""
    p = argparse.ArgumentParser(prog="gpc-ros demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=3, help="seeded episodes with the composed policy (default 3)")
    p.add_argument("--seed", type=int, default=DemoConfig.seed,
                   help=f"layout seed of the first episode (default {DemoConfig.seed}: not a demonstration seed)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="episode time limit in simulated seconds (default: the task's, 8 s)")
    p.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                   help="composer weights, one per parent (default: config/sim_composer.yaml)")
    p.add_argument("--compare", action="store_true", help="then the same seeds with each parent alone")
    p.add_argument("--viewer", action="store_true",
                   help="also serve the graph to the Foxglove app on ws://127.0.0.1:8765 (docs/monitoring.md)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: demo_runs/<date>_<time> under the current folder)")
    p.add_argument("--config", default=None, help="graph description (default: config/graph.yaml)")
    p.add_argument("--deployment", choices=["separate", "in_process"], default=None,
                   help="policy hosts in their own processes or inside the composer (default: the graph file's)")
    p.add_argument("--replay-chunks", type=int, default=6,
                   help="chunks the replay report re-samples from the recording (default 6; 0 = no replay)")
    p.add_argument("--chunk-timeout", type=float, default=120.0, metavar="S",
                   help="wall seconds without a composed chunk that count as a failed graph (default 120)")
    p.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                   help="wall seconds for the graph to come up and compose its first chunk (default 600)")
    p.add_argument("--no-video", action="store_true", help="skip the video and the plot")
    p.add_argument("--analytic", action="store_true",
                   help="run the earlier analytic two-goal demo instead (no graph, no cameras; its own options "
                        "follow: gpc-ros demo --analytic --help)")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _replay(bag: Path, out: Path, checkpoints: dict[str, str], weights: list[float], chunks: int) -> str:
    """Run ``gpc-ros replay`` on the recording; returns its printed report (also in ``out/replay.txt``)."""
    from gpc_ros.monitor import replay_cli
    from gpc_ros.policies.registry import resolve_checkpoint

    argv = [str(bag), *[f"--parent={name}={resolve_checkpoint(ckpt)}" for name, ckpt in checkpoints.items()],
            "--weights", *[str(w) for w in weights], "--max-chunks", str(chunks), "--out", str(out / "replay")]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = replay_cli.main(argv)
    text = buffer.getvalue()
    (out / "replay.txt").write_text(f"$ gpc-ros replay {' '.join(argv)}\n{text}exit status {code}\n")
    if code == replay_cli.EXIT_BAD_INPUT:
        raise ValueError(f"gpc-ros replay refused the recording: {text.strip().splitlines()[-1] if text else code}")
    return text


def make_artifacts(session: DemoSession, out: Path, replay_chunks: int, video: bool) -> list[str]:
    """Video, plot and replay report from the recording; returns what was written (one line each)."""
    from gpc_ros.demo.artifacts import load_run, write_plot, write_video

    written = [f"recording (MCAP, rosbags / ros2 bag / Foxglove): {session.bag_dir}"]
    episodes = [r.row() for r in session.reports]
    if video and episodes:
        t0 = time.monotonic()
        run = load_run(session.bag_dir, session.parents)
        written.append(f"video: {write_video(run, episodes, out / 'front_camera')}")
        written.append(f"plot: {write_plot(run, episodes, out / 'chunks.png')}")
        logger.info("video and plot in %.1f s", time.monotonic() - t0)
    if replay_chunks > 0:
        composed = next((r for r in session.reports if r.policy == "composed"), None)
        weights = list(composed.weights.values()) if composed else session.weights
        _replay(session.bag_dir, out, session.checkpoints, weights, replay_chunks)
        written.append(f"replay report: {out / 'replay' / 'report.json'} (+ report.png, replay.txt)")
    return written


def main(argv: list[str] | None = None) -> int:
    """Run ``gpc-ros demo`` (see the module docstring); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--analytic" in argv:  # the earlier demo takes its own options (gpc-ros demo --analytic --help)
        from gpc_ros.demo import analytic

        return analytic.main([a for a in argv if a != "--analytic"])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = DemoConfig(episodes=args.episodes, seed=args.seed, time_limit_s=args.time_limit,
                            weights=tuple(args.weights) if args.weights else None, compare=args.compare,
                            viewer=args.viewer, graph=args.config, deployment=args.deployment,
                            chunk_timeout_s=args.chunk_timeout, startup_timeout_s=args.startup_timeout)
    except ValueError as exc:
        print(f"gpc-ros demo: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = args.out or Path("demo_runs") / datetime.now().strftime("%Y%m%d_%H%M%S")
    if out.exists() and any(out.iterdir()):
        print(f"gpc-ros demo: output folder {out} exists and is not empty; choose another --out", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"gpc-ros demo: output folder {out}")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (gpc_ros/graph/bringup.py)
    session = DemoSession(config, out, say=lambda line: print(line, flush=True))
    wall0 = time.monotonic()
    status, failure = EXIT_OK, ""
    try:
        session.start()
        session.run_all()
    except GraphFailedError as exc:
        status, failure = EXIT_GRAPH_FAILED, str(exc)
        print(f"gpc-ros demo: {failure}", flush=True)
    except ValueError as exc:  # e.g. weights the composer refuses
        status, failure = EXIT_BAD_INPUT, str(exc)
        print(f"gpc-ros demo: {failure}", flush=True)
    except KeyboardInterrupt:
        status, failure = EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
        print("gpc-ros demo: interrupted: stopping every process", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
        try:
            session.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    graph_wall = time.monotonic() - wall0
    summary = {**session.summary(), "status": status, "failure": failure, "graph_wall_s": round(graph_wall, 2),
               "events": list(session.supervisor.events) if session.supervisor else []}
    if status == EXIT_OK:
        try:
            for line in make_artifacts(session, out, args.replay_chunks, not args.no_video):
                print(line)
        except (ValueError, OSError) as exc:  # the graph ran; a missing picture is reported, not hidden
            summary["artifact_error"] = str(exc)
            print(f"gpc-ros demo: could not write every output: {exc}", file=sys.stderr)
    summary["wall_s"] = round(time.monotonic() - wall0, 2)
    if out.exists():
        write_json(out / "summary.json", summary)
    rows = session.reports
    if rows:
        wins = sum(r.success for r in rows if r.policy == "composed")
        composed = sum(r.policy == "composed" for r in rows)
        print(f"composed: {wins}/{composed} successes; real-time factor of the graph on the cell "
              f"{summary['real_time_factor']}; {summary['wall_s']:.0f} s wall in all; summary: {out / 'summary.json'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
