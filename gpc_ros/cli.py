"""``gpc-ros``: the user-facing command line of gpc_ros (one subcommand per job)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# subcommand -> (module with ``main(argv) -> int``, one-line help). Modules are imported only when chosen,
# so `gpc-ros --help` stays fast and a missing optional dependency only breaks its own subcommand.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "bringup": ("gpc_ros.graph.bringup",
                "start the whole graph (config/graph.yaml) as plain processes; --sim: on franky-sim"),
    "demo": ("gpc_ros.demo.cli", "the whole graph on the simulated push_red cell: seeded episodes, video, report"),
    "sim-server": ("gpc_ros.sim.franky_sim_server", "serve a franky-sim FR3 on a loopback address"),
    "doctor": ("gpc_ros.doctor", "check that the whole stack imports and report versions"),
    "collect": ("gpc_ros.sim.collect", "record scripted-expert demonstrations of a simulated cell task"),
    "dataset": ("gpc_ros.policies.lerobot.dataset_cli", "inspect or convert datasets (npz <-> LeRobotDataset v3.0)"),
    "train": ("gpc_ros.policies.train_cli",
              "train a parent policy (diffusion, dp3, flow) on episodes or a synthetic task"),
    "record": ("gpc_ros.nodes.recorder_node",
               "record the graph's topics (documented profile) into an MCAP rosbag2 bag"),
    "viewer": ("gpc_ros.nodes.viewer_node", "serve the running graph to the Foxglove app (WebSocket, 127.0.0.1:8765)"),
    "replay": ("gpc_ros.monitor.replay_cli",
               "replay a recorded bag through checkpoints and the composer: report per weight"),
    "benchmark": ("gpc_ros.benchmark.cli", "evaluate parents and their compositions on the simulated cell (results)"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``gpc-ros <command> [args...]`` to the chosen subcommand's ``main``.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``); the first one names the subcommand,
            the rest are passed to it unchanged.

    Returns:
        The subcommand's exit code; 0 for ``--help``, 2 when no subcommand is given.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="gpc-ros", description="General Policy Composition on ROS 2 / Franka.")
    parser.add_argument("command", choices=sorted(SUBCOMMANDS), help="; ".join(
        f"{name}: {help_}" for name, (_, help_) in sorted(SUBCOMMANDS.items())))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    run: Callable[[list[str]], int] = module.main
    return int(run(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
