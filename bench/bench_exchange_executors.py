"""Round trip of one predict step to a policy host process, per rclpy executor on each side (docs/graph.md).

The host is the real ``PolicyHostNode`` (an analytic ``goal`` parent, so the predict itself costs ~0.2 ms) spun by
the chosen executor in its own process; the composer side is a minimal node with a ``RemoteHost`` handle spun by the
chosen executor in a background thread. Executors: ``mt`` (MultiThreadedExecutor, 2 threads: what the nodes use),
``st`` (SingleThreadedExecutor), ``ev`` (rclpy's experimental EventsExecutor).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_exchange_executors.py --hosts mt,st --composers mt --steps 150``.
Prints the median and p90 round trip per pair with the load average.

``--endpoints node,waitset,executor --rounds 20 --steps 30`` instead compares the real nodes on both sides, side by
side: each set-up is one ``PolicyHostNode`` process (spun as ``policy_host_node`` spins it: a 2-thread
``MultiThreadedExecutor``) and one ``ComposerNode`` in this process (a 4-thread ``MultiThreadedExecutor``, as
``composer_node``), with ``ee_pose`` flowing at 30 Hz to all; ``node`` = the exchange topics on the main nodes
(the set-up before), ``waitset`` / ``executor`` = on a dedicated :class:`~gpc_ros.nodes.exchange.ExchangeEndpoint`
on each side with that dispatch. All set-ups run at once and are measured in turn, ``--steps`` predict round trips
per set-up and round (the order reverses every round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402


def make_executor(kind: str):
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor

    return {"mt": lambda: MultiThreadedExecutor(num_threads=2), "st": SingleThreadedExecutor,
            "ev": EventsExecutor}[kind]()


def host_main(kind: str, ros_args: list[str]) -> int:
    """The host process: PolicyHostNode spun by executor ``kind`` until SIGINT (or ``--endpoints`` kinds)."""
    import rclpy

    from gpc_ros.nodes.policy_host_node import PolicyHostNode

    rclpy.init(args=ros_args)
    if kind in ("node", "executor", "waitset"):
        node = PolicyHostNode(f"goal_{kind}_host", exchange_dispatch=kind)
        kind = "mt"
    else:
        node = PolicyHostNode("goal_host", exchange_dispatch="node")  # the executor under test spins the exchange
    executor = make_executor(kind)
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="mt,st")
    parser.add_argument("--composers", default="mt")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--endpoints", default="",
                        help="node,waitset,executor: compare the real nodes' set-ups (see above)")
    parser.add_argument("--rounds", type=int, default=20, help="with --endpoints: alternating rounds")
    parser.add_argument("--host", help=argparse.SUPPRESS)  # internal: run as the host process
    args, rest = parser.parse_known_args(argv)
    if args.host:
        return host_main(args.host, rest)
    if args.endpoints:
        return compare_endpoints(args.endpoints.split(","), args.rounds, args.steps)

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray, String

    from gpc_ros.graph.composition import RemoteHost
    from gpc_ros.nodes import conversions
    from gpc_ros.nodes.policy_host_node import ANNOUNCE_QOS, EXCHANGE_QOS, host_topics

    lease, env, params = _domain_and_params(["goal"])
    rclpy.init()
    print(f"bench_exchange_executors: load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for host_kind in args.hosts.split(","):
            for composer_kind in args.composers.split(","):
                proc = subprocess.Popen([sys.executable, __file__, "--host", host_kind, "--ros-args", "--params-file",
                                         params], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                node = Node(f"bench_{host_kind}_{composer_kind}")
                topics = host_topics("goal")
                pub = node.create_publisher(Float64MultiArray, topics["request"], EXCHANGE_QOS)
                handle = RemoteHost("goal", lambda x, pub=pub: pub.publish(conversions.exchange_to_msg(x)))
                node.create_subscription(Float64MultiArray, topics["reply"],
                                         lambda m, h=handle: h.deliver(conversions.exchange_from_msg(m)),
                                         EXCHANGE_QOS)
                node.create_subscription(String, topics["announce"],
                                         lambda m, h=handle: h.announce(json.loads(m.data)), ANNOUNCE_QOS)
                pose_pub = node.create_publisher(PoseStamped, "ee_pose", 10)
                executor = make_executor(composer_kind)
                executor.add_node(node)
                threading.Thread(target=executor.spin, daemon=True).start()
                try:
                    deadline = time.monotonic() + 120
                    while not handle.announced:
                        if time.monotonic() > deadline:
                            raise SystemExit("the host did not announce within 120 s")
                        time.sleep(0.05)
                    pose = PoseStamped()
                    pose.header.stamp = node.get_clock().now().to_msg()
                    pose.pose.position.x = 0.5
                    for _ in range(20):
                        pose_pub.publish(pose)
                        time.sleep(0.05)
                    handle.encode(1, node.get_clock().now().nanoseconds * 1e-9, 32).event.wait(5.0)
                    x = torch.randn(1, 16, 3)
                    trips = []
                    for step in range(args.steps):
                        t0 = time.perf_counter()
                        handle.predict(1, step, 50.0, (0, 0), x, 5.0)
                        trips.append(time.perf_counter() - t0)
                    print(f"  host {host_kind} / composer {composer_kind}: median {statistics.median(trips) * 1e3:.2f}"
                          f" ms, p90 {float(np.percentile(trips, 90)) * 1e3:.2f} ms, load "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
                except Exception as exc:  # one pair failing (e.g. an executor that does not deliver) is a result
                    print(f"  host {host_kind} / composer {composer_kind}: failed: {exc}", flush=True)
                finally:
                    executor.shutdown()
                    node.destroy_node()
                    proc.send_signal(2)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    finally:
        rclpy.try_shutdown()
        lease.release()
    return 0


def _domain_and_params(names: list[str]):
    """Lease a ROS domain, set this process's DDS environment, write the goal hosts' parameter file."""
    from gpc_ros.leases import acquire
    from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env

    lease = acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1))
    env = graph_env(lease.value)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")})
    params = os.path.join(tempfile.mkdtemp(prefix="bench-exchange-"), "host.yaml")
    with open(params, "w") as f:
        yaml.safe_dump({f"{n}_host": {"ros__parameters": {
            "name": n, "factory": "gpc_ros.graph.parents:goal_parent",
            "factory_kwargs": '{"goal_m": [0.6, 0.0, 0.4]}', "modality": "state", "obs_horizon": 1,
            "state_dim": 3}} for n in names}, f)
    return lease, env, params


def compare_endpoints(kinds: list[str], rounds: int, steps: int) -> int:
    """``--endpoints``: the real host and composer nodes per set-up, measured alternately in one run."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from gpc_ros.nodes.composer_node import ComposerNode

    lease, env, params = _domain_and_params([f"goal_{k}" for k in kinds])
    rclpy.init()
    load_before = os.getloadavg()
    print(f"bench_exchange_executors --endpoints: load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}", flush=True)
    procs, executors, composers = [], [], {}
    stop = threading.Event()
    try:
        for kind in kinds:
            procs.append(subprocess.Popen([sys.executable, __file__, "--host", kind, "--ros-args", "--params-file",
                                           params], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            node = ComposerNode(exchange_dispatch=kind, cli_args=["--ros-args", "-r",
                                                                             f"__node:=composer_{kind}"],
                                parameter_overrides=[Parameter("parents", value=[f"goal_{kind}"]),
                                                     Parameter("weights", value=[1.0]),
                                                     Parameter("replan_period_s", value=1000.0),
                                                     Parameter("min_plan_remaining_s", value=0.0)])
            executor = MultiThreadedExecutor(num_threads=4)  # as composer_node's main() spins it
            executor.add_node(node)
            threading.Thread(target=executor.spin, daemon=True).start()
            executors.append(executor)
            composers[kind] = node
        poser = Node("bench_pose")
        pose_pub = poser.create_publisher(PoseStamped, "ee_pose", 10)

        def publish_poses() -> None:
            while not stop.wait(1 / 30):
                pose = PoseStamped()
                pose.header.stamp = poser.get_clock().now().to_msg()
                pose.pose.position.x = 0.5
                pose_pub.publish(pose)

        threading.Thread(target=publish_poses, daemon=True).start()
        handles = {k: composers[k].core.handles[f"goal_{k}"] for k in kinds}
        deadline = time.monotonic() + 120
        while not all(h.announced for h in handles.values()):
            if time.monotonic() > deadline:
                raise SystemExit("the hosts did not announce within 120 s")
            time.sleep(0.05)
        time.sleep(1.0)  # a few poses in every host's window
        trips: dict[str, list[float]] = {k: [] for k in kinds}
        x = torch.randn(1, 16, 3)
        for r in range(-2, rounds):  # two warm-up rounds
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                handle, corr = handles[kind], r + 10
                now = composers[kind].get_clock().now().nanoseconds * 1e-9
                if handle.encode(corr, now, 32).event.wait(5.0) is False:
                    raise SystemExit(f"{kind}: no encode reply within 5 s")
                for step in range(steps):
                    t0 = time.perf_counter()
                    handle.predict(corr, step, 50.0, (0, 0), x, 5.0)
                    if r >= 0:
                        trips[kind].append(time.perf_counter() - t0)
                handle.forget(corr)
        load_after = os.getloadavg()
        base = statistics.median(trips[kinds[0]])
        for kind in kinds:
            t = trips[kind]
            print(f"  {kind}: {len(t)} round trips, median {statistics.median(t) * 1e3:.2f} ms, p90 "
                  f"{float(np.percentile(t, 90)) * 1e3:.2f} ms, min {min(t) * 1e3:.2f} ms "
                  f"({statistics.median(t) / base:.2f}x {kinds[0]})", flush=True)
        print(f"  load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}", flush=True)
    finally:
        stop.set()
        for executor in executors:
            executor.shutdown()
        for node in composers.values():
            node.destroy_node()
        for proc in procs:
            proc.send_signal(2)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        rclpy.try_shutdown()
        lease.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
