"""``gpc-ros bringup``: start the whole graph from config/graph.yaml as plain processes (no ROS CLI, no launch).

The same processes, parameter files, overrides and remappings as ``ros2 launch gpc_ros franka_compose.launch.py``
(both read the graph through :func:`gpc_ros.graph.description.describe_graph`). ``--sim`` starts the simulated
FR3 first; ``--viewer`` adds the Foxglove live view; ``--print`` only prints the command lines. Ctrl-C stops
every process it started. docs/graph.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import signal

from gpc_ros.graph.description import GraphDescription, ProcessSpec, describe_graph
from gpc_ros.graph.supervisor import Supervisor
from gpc_ros.paths import share_dir
from gpc_ros.ros_env import graph_env
from gpc_ros.sim.franky_sim_process import lease_loopback_host


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def with_viewer(description: GraphDescription, host: str, port: int) -> GraphDescription:
    """``description`` plus the Foxglove viewer node (``gpc-ros viewer``) as its last process.

    Args:
        description: The graph to extend.
        host: Interface the viewer's WebSocket server binds (``127.0.0.1`` keeps it on this machine).
        port: The viewer's WebSocket port.

    Returns:
        A new description; the viewer gets ``config/monitor.yaml`` and the host/port overrides.
    """
    viewer = ProcessSpec(name="viewer_node", executable="viewer_node",
                         params_files=(str(share_dir() / "config" / "monitor.yaml"),),
                         parameters={"host": host, "port": int(port)})
    return dataclasses.replace(description, processes=(*description.processes, viewer))


def main(argv: list[str] | None = None) -> int:
    """Run ``gpc-ros bringup``: start every process of the graph and supervise them until one exit stops it or Ctrl-C.

    Args:
        argv: The command-line arguments after ``bringup`` (default: ``sys.argv[1:]``).

    Returns:
        0 after ``--print`` or Ctrl-C, 1 when a child's exit stopped the graph, 2 for an invalid graph description.
    """
    parser = argparse.ArgumentParser(prog="gpc-ros bringup", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="graph description (default: config/graph.yaml)")
    parser.add_argument("--sim", action="store_true", help="start the simulated FR3 and drive it")
    parser.add_argument("--robot-ip", default=None, help="FCI address (default: the graph file's)")
    parser.add_argument("--deployment", choices=["separate", "in_process"], default=None,
                        help="policy hosts in their own processes or inside the composer (default: the file's)")
    parser.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
                        help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID or 0)")
    parser.add_argument("--subnet", action="store_true",
                        help="discover over the network (hosts on other machines; docs/graph.md) instead of "
                             "localhost only")
    parser.add_argument("--viewer", action="store_true",
                        help="also serve the graph to the Foxglove app (viewer_node, docs/monitoring.md)")
    parser.add_argument("--viewer-host", default="127.0.0.1",
                        help="interface the viewer binds (default 127.0.0.1: this machine only)")
    parser.add_argument("--viewer-port", type=int, default=8765, help="the viewer's WebSocket port (default 8765)")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the command lines and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lease = None
    if args.sim and args.robot_ip is None and not args.print_only:
        lease, args.robot_ip = lease_loopback_host()  # a free 127.0.0.k: never collides with another sim here
    try:
        description = describe_graph(args.config, use_sim=True if args.sim else None, robot_ip=args.robot_ip,
                                     deployment=args.deployment)
        env = graph_env(args.domain_id, localhost_only=not args.subnet)
        if args.viewer:
            description = with_viewer(description, args.viewer_host, args.viewer_port)
    except ValueError as exc:
        print(f"gpc-ros bringup: {exc}")
        return 2
    if args.print_only:
        for spec in description.processes:
            print(shlex.join(spec.argv()))
        return 0
    print(f"gpc-ros bringup: {len(description.processes)} processes on ROS domain {args.domain_id} "
          f"({'simulated FR3 at ' if description.use_sim else 'robot at '}{description.robot_ip}); Ctrl-C stops all")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the graph like Ctrl-C
    # SIGINT explicitly too (as `ros2 launch` does): a shell script's background job starts with SIGINT ignored, and
    # Python then keeps ignoring it, so `kill -INT` did nothing and every child inherited the ignored SIGINT (the
    # driver would then be SIGKILLed at stop instead of stopping the arm). A handled signal is reset to its default
    # in the children at exec, so they stop on the supervisor's SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    supervisor = Supervisor(description, env)
    try:
        supervisor.start()
        return supervisor.run()
    finally:
        supervisor.stop()
        if lease is not None:
            lease.release()


if __name__ == "__main__":
    raise SystemExit(main())
