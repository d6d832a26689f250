"""Observation-to-chunk latency of the graph: K = 2 policy hosts in separate processes and in-process, against one
parent alone, plus the per-step exchange overhead, measured side by side in one run (figures: docs/graph.md).

Parents: the ``small`` preset (the shipped size) RGB diffusion policy (96x96 images) and DP3-style point-cloud
policy (512 points; ``--unet-down-dims`` scales both heads up), random weights, saved as checkpoints and loaded by
the hosts exactly as trained ones would be; DDIM, 10 steps, one candidate, batch 1. Cases, interleaved round by round:

* ``one parent alone``: the plain in-process Composer with the RGB parent (encode + sample), 1 torch thread
  (what a host runs: ``torch_threads: 1``); ``one parent alone, 2 torch threads``: the same with 2 intra-op threads;
* ``K=2 in-process Composer, sequential | threads | auto``: the plain Composer with both parents, 1 torch thread,
  ``parallel_parents`` False (one after the other), True (the second parent's forward on a pool thread) or
  ``"auto"`` (measured per step, the faster path; :class:`~gpc_ros.compose.composer.ParallelChooser`);
* ``K=2 graph, in-process hosts, sequential | threads | auto``: the composer core over host cores in this process
  (no serialisation; ``deployment: in_process``), the same three settings (``threads`` was the node's default);
* ``..., traced`` (``--traced``, default on): the same in-process cases with both parents' heads run as frozen
  TorchScript traces (``HostConfig.trace_head``), and ``one parent alone, traced``, the fair baseline for them
  (column ``x one traced``); ``joint, traced``: both heads in ONE traced call per step, the second forked
  (``ComposerConfig.joint_step`` True), and since session 12 both encoders in one traced call per chunk
  (``joint_encode`` True); the other traced cases have both False; ``spinning workers, traced`` (session 14): the
  joint encode and joint step with the second head in a worker process that busy-polls shared memory during a
  chunk (``ComposerConfig.joint_step_workers`` True, :class:`~gpc_ros.policies.spin_worker.SpinningHeadsStep`),
  for the plain Composer and for the graph's in-process hosts (``deployment: in_process``); the workers are ready
  and their traces made before the timed rounds, and the steps they answered are counted;
* ``K=2 graph, separate hosts``: the composer core here, each host its own process (1 torch thread each),
  every encode and denoising step over DDS (std_msgs/Float64MultiArray), the two hosts' steps overlapping; the
  exchange topics on a dedicated :class:`~gpc_ros.nodes.exchange.ExchangeEndpoint` on both sides (wait-set
  dispatch, what the nodes use);
* ``K=2 graph, separate hosts, pinned`` (``--pin``, default on with >= 2 CPUs): the same with two more host
  processes, each pinned to a core of its own (``cpu_affinity``: the first two CPUs this process may use);
* ``K=2 graph, separate, pool`` (``--pool``, default on; also for the pinned pair): the same hosts, each step's
  requests sent from the core Composer's ``parallel_parents`` pool, one thread per host (the path before the
  split-phase send, where the composer's thread sends every host's request, then waits for all); for every
  separate-host case the bench also reports when the second host's request of a step left after the first;
* ``K=2 graph, separate, on main nodes``: the same with the set-up before the endpoint (``--before``, default on):
  two more host processes whose exchange topics are on the host node itself (2-thread ``MultiThreadedExecutor``,
  as ``policy_host_node`` spins it) and reply subscriptions on this process's node (2-thread executor);
* ``..., hosts stopped`` (``--stopped-hosts``, default on; session 16): every case above that uses no host
  process, measured again in the same round with the bench's host processes stopped (SIGSTOP, with any children: a
  stopped process takes no CPU time) and its 10 Hz observation publisher paused: the in-process deployment without
  the separate-host processes, which otherwise run beside the in-process cases with their ROS executors and the
  images and clouds they receive. Each round has a block with the hosts running (all cases) and a block with them
  stopped (the in-process cases), in alternating order (the cases' order inside a block alternates every two
  rounds); after a stopped block the hosts are resumed (SIGCONT) and given ``--settle-s`` before the next case. A
  pause lasts one block (a few seconds, well under the 20 s DDS participant lease), and the separate-host cases check
  every chunk, so hosts that did not answer after a pause would stop the bench. The stopped block's ratios are to
  its own one-parent cases (its own table); its spinning cases' step split is reported per condition;
* ``exchange overhead``: one predict round trip to a host process minus the same predict called locally, per
  step (an analytic parent, so the network cost is negligible), for each set-up; its minimum (the path without
  preemption) and median, and, to say where the time goes, the serialisation alone (request and reply each packed,
  converted to a ``Float64MultiArray`` and back, in this process: no DDS, no executor).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_graph.py [--rounds N]``. Each figure is a median over rounds;
ratios are to ``one parent alone`` of the same run (and to ``one parent alone, traced``); ``cpu ms`` is this
process's CPU time per chunk (all its threads; for the separate-host cases the hosts' is not in it); ``hosts cpu
ms`` the host processes' CPU time during a chunk (mean; /proc's 10 ms ticks, so only a mean over rounds means
anything; for the in-process cases: what the hosts took beside them). The machine's
load average is printed before and after (stopped processes do not count in it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from gpc_ros.compose import Composer  # noqa: E402
from gpc_ros.graph import protocol  # noqa: E402
from gpc_ros.graph.composition import ComposerNodeConfig, GraphComposer, LocalHost, RemoteHost  # noqa: E402
from gpc_ros.graph.host import HostConfig, HostCore, Observing, load_host_parent  # noqa: E402
from gpc_ros.graph.parents import GoalParent  # noqa: E402
from gpc_ros.leases import acquire  # noqa: E402
from gpc_ros.policies import make_policy, save_policy  # noqa: E402
from gpc_ros.policies.normalization import fit_min_max  # noqa: E402
from gpc_ros.policies.presets import policy_config  # noqa: E402
from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env  # noqa: E402
from gpc_ros.testing.processes import interrupt_all  # noqa: E402

KEYS = {"action": [3], "observation.state": [3], "observation.image": [96, 96, 3], "observation.pointcloud": [512, 3]}


def write_checkpoints(folder: Path, unet_down_dims: tuple[int, ...] | None = None) -> dict[str, str]:
    rng = np.random.default_rng(0)
    action_norm = fit_min_max(rng.uniform(0.2, 0.7, (100, 3)))
    state_norm = fit_min_max(rng.uniform(0.2, 0.7, (100, 3)))
    out = {}
    for name, policy_type in (("rgb", "diffusion"), ("pcd", "dp3")):
        torch.manual_seed(1)
        config = policy_config(policy_type, "small", KEYS)
        if unet_down_dims is not None:  # a bigger head: more compute per denoising step, same everything else
            config = replace(config, unet=replace(config.unet, down_dims=unet_down_dims))
        policy = make_policy(policy_type, config, action_norm, state_norm)
        out[name] = str(save_policy(policy, folder / name))
        params = sum(p.numel() for p in policy.parameters())
        print(f"  parent {name}: {policy_type}, {params / 1e6:.2f} M parameters")
    return out


def fill(core: HostCore, t_s: float) -> None:
    rng = np.random.default_rng(0)
    o = core.observing
    for k in range(2):
        core.window.add_state(t_s - 0.1 * (1 - k), rng.uniform(0.3, 0.6, 3))
        if o.modality == "image":
            core.window.add_frame(t_s - 0.1 * (1 - k), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
        elif o.modality == "pointcloud":
            core.window.add_frame(t_s - 0.1 * (1 - k), rng.uniform(-0.3, 0.6, (512, 3)).astype(np.float32))


#: A host process whose exchange topics are on the host node itself (the set-up before the endpoint).
HOST_ON_MAIN_NODE = ("import functools, sys; from gpc_ros.nodes.spin import spin_node; "
                     "from gpc_ros.nodes.policy_host_node import PolicyHostNode; "
                     "spin_node(functools.partial(PolicyHostNode, exchange_dispatch='node'), sys.argv[1:], threads=2)")


class Wire:
    """rclpy side of the bench: RemoteHost handles to host processes.

    Replies of the hosts named in ``endpoint`` go through an :class:`~gpc_ros.nodes.exchange.ExchangeEndpoint`
    (as in the composer node), the others through this node's 2-thread executor (the set-up before).
    """

    def __init__(self, names: list[str], endpoint: set[str]) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import Float64MultiArray, String

        from gpc_ros.nodes import conversions
        from gpc_ros.nodes.exchange import ExchangeEndpoint
        from gpc_ros.nodes.policy_host_node import (
            ANNOUNCE_QOS,
            EXCHANGE_QOS,
            host_topics,
        )

        rclpy.init()
        self.node = Node("bench_graph")
        self.endpoint = ExchangeEndpoint("bench_graph_exchange")
        self.handles: dict[str, RemoteHost] = {}
        for name in names:
            topics = host_topics(name)
            wire = self.endpoint if name in endpoint else self.node
            pub = wire.create_publisher(Float64MultiArray, topics["request"], EXCHANGE_QOS)
            handle = RemoteHost(name, lambda x, pub=pub: pub.publish(conversions.exchange_to_msg(x)))
            wire.create_subscription(Float64MultiArray, topics["reply"],
                                          lambda m, h=handle: h.deliver(conversions.exchange_from_msg(m)),
                                          EXCHANGE_QOS)
            self.node.create_subscription(String, topics["announce"],
                                          lambda m, h=handle: h.announce(__import__("json").loads(m.data)),
                                          ANNOUNCE_QOS)
            self.handles[name] = handle
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def publish_observations(self, stop: threading.Event, publishing: threading.Lock) -> None:
        """Images, clouds and poses at 10 Hz with fresh stamps (what cameras and the driver would send); each
        publication holds ``publishing``, so whoever holds it pauses them (:class:`HostPause`)."""
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import Image, PointCloud2

        from gpc_ros.nodes import conversions

        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        points = rng.uniform(-0.3, 0.6, (512, 3)).astype(np.float32)
        image_pub = self.node.create_publisher(Image, "/camera/camera/color/image_raw", 10)
        points_pub = self.node.create_publisher(PointCloud2, "/gpc/points", 10)
        pose_pub = self.node.create_publisher(PoseStamped, "ee_pose", 10)
        while not stop.wait(0.1):
            with publishing:
                if stop.is_set():
                    return
                stamp = self.node.get_clock().now().to_msg()
                image_pub.publish(conversions.rgb_to_image_msg(image, stamp, "camera_color_optical_frame"))
                points_pub.publish(conversions.pointcloud2_msg(points, stamp, "fr3_link0"))
                pose = PoseStamped()
                pose.header.stamp, pose.header.frame_id = stamp, "fr3_link0"
                pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.45, 0.0, 0.4
                pose_pub.publish(pose)

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.endpoint.close()
        self.node.destroy_node()
        rclpy.try_shutdown()


class HostPause:
    """Stops the bench's host processes (SIGSTOP, with any children) and pauses the observation publisher, and
    resumes both (SIGCONT): the in-process cases measured with and without the separate-host processes running, in
    the same run. A stopped process takes no CPU time and is not counted in the load average; its DDS peers keep it
    (the participant lease is 20 s, a pause here lasts one block of in-process cases, a few seconds)."""

    def __init__(self, procs: list, publishing: threading.Lock) -> None:
        self.procs, self.publishing = procs, publishing
        self.stopped: list[int] = []
        self.pauses, self.longest_s = 0, 0.0
        self._t0 = 0.0

    def _pids(self) -> list[int]:
        out, todo = [], [p.pid for p in self.procs]
        while todo:
            pid = todo.pop()
            out.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        return out

    @staticmethod
    def _state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "gone"

    def cpu_s(self) -> float:
        """The host processes' CPU time so far (user + system, all threads; /proc, 10 ms ticks)."""
        total = 0
        for p in self.procs:
            try:
                total += sum(int(v) for v in Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
            except (OSError, ValueError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Pause the publisher (after its current publication), SIGSTOP the hosts, return once all are stopped."""
        import signal

        self.publishing.acquire()
        self.stopped = self._pids()
        for pid in self.stopped:
            os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5.0
        while not all(self._state(pid) in ("T", "t", "gone") for pid in self.stopped):
            if time.monotonic() > deadline:
                self.resume()
                raise SystemExit("the host processes did not stop within 5 s")
            time.sleep(0.0005)
        self._t0 = time.monotonic()

    def resume(self) -> None:
        import signal

        if not self.stopped:
            return
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.pauses += 1
        self.longest_s = max(self.longest_s, time.monotonic() - self._t0)
        self.stopped = []
        self.publishing.release()


class SendLog:
    """When each predict request left, per case: wraps the handles' ``send`` (a clock read and an append)."""

    def __init__(self, handles: list[RemoteHost]) -> None:
        self.case: str | None = None
        self.sent: dict[str, list[tuple[int, int, str, float]]] = {}
        for handle in handles:
            def send(request, inner=handle._send, name=handle.name) -> None:
                if self.case is not None and request.kind == protocol.KIND_PREDICT:
                    self.sent.setdefault(self.case, []).append((request.correlation_id, request.step, name,
                                                                time.perf_counter()))
                inner(request)
            handle._send = send

    def gaps(self) -> dict[str, list[float]]:
        """Case -> per step with both requests sent: the later send minus the earlier (s)."""
        out: dict[str, list[float]] = {}
        for case, rows in self.sent.items():
            steps: dict[tuple[int, int], list[float]] = {}
            for corr, step, _, t in rows:
                steps.setdefault((corr, step), []).append(t)
            out[case] = [max(ts) - min(ts) for ts in steps.values() if len(ts) == 2]
        return out


def median_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the median of ``values`` and a 95 % bootstrap interval of it (rounds resampled)."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    boots = np.sort(np.median(rng.choice(arr, size=(n_boot, len(arr)), replace=True), axis=1))
    return float(np.median(arr)), float(boots[int(0.025 * n_boot)]), float(boots[int(0.975 * n_boot) - 1])


def paired_ratio(case: list[float], base: list[float]) -> str:
    """The per-round ratios ``case[r] / base[r]`` (both timed in round ``r``): their median and its 95 % interval."""
    med, lo, hi = median_ci([c / b for c, b in zip(case, base)])
    return f"{med:.3f}x per round (95 % interval of the median {lo:.3f}-{hi:.3f}x)"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--unet-down-dims", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                        help="the parents' U-Net channels per level, e.g. 256,512,1024 (Diffusion Policy's size); "
                             "default: the shipped small preset (32,64,128)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--before", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the set-up before the exchange endpoint (exchange on the main nodes)")
    parser.add_argument("--pool", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the separate hosts with each step's requests sent from a thread per host "
                             "(the core Composer's pool: the path before the split-phase send)")
    parser.add_argument("--traced", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the in-process cases with traced heads (HostConfig.trace_head) and one "
                             "parent alone with its head traced")
    parser.add_argument("--workers", action=argparse.BooleanOptionalAction, default=True,
                        help="with --traced, also measure the joint step with the second head in a spinning worker "
                             "process (ComposerConfig.joint_step_workers), plain Composer and graph")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=len(os.sched_getaffinity(0)) >= 2,
                        help="also measure separate hosts pinned to a core each (cpu_affinity)")
    parser.add_argument("--stopped-hosts", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure every in-process case (no host process in it) with the bench's host "
                             "processes stopped (SIGSTOP) and its observation publisher paused, in a block of each "
                             "round before or after the block with them running (alternating): the in-process "
                             "deployment without the separate-host processes, side by side with them, in one run")
    parser.add_argument("--settle-s", type=float, default=0.5,
                        help="with --stopped-hosts: after resuming the hosts, wait this long before the next case")
    args = parser.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))[:2]
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    print(f"bench_graph: {os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f} (1/5/15 min)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    checkpoints = write_checkpoints(tmp, args.unet_down_dims)
    lease = acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1))
    env = graph_env(lease.value)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")})
    import subprocess

    import yaml

    hosts_yaml = tmp / "hosts.yaml"
    suffixes = ("", "_before") if args.before else ("",)
    blocks = {}
    if args.pin:
        for n, cpu in zip(("rgb", "pcd"), cores):
            blocks[f"{n}_pin_host"] = {"ros__parameters": {"name": n + "_pin", "checkpoint": checkpoints[n],
                                                           "torch_threads": 1, "cpu_affinity": str(cpu)}}
    for suffix in suffixes:
        for n in ("rgb", "pcd"):
            blocks[f"{n}{suffix}_host"] = {"ros__parameters": {"name": n + suffix, "checkpoint": checkpoints[n],
                                                               "torch_threads": 1}}
        blocks[f"goal{suffix}_host"] = {"ros__parameters": {
            "name": "goal" + suffix, "factory": "gpc_ros.graph.parents:goal_parent",
            "factory_kwargs": '{"goal_m": [0.6, 0.0, 0.4]}', "modality": "state", "obs_horizon": 1, "state_dim": 3}}
    hosts_yaml.write_text(yaml.safe_dump(blocks))
    procs = [subprocess.Popen([sys.executable, *(["-c", HOST_ON_MAIN_NODE] if suffix else
                                                 ["-m", "gpc_ros.nodes.policy_host_node"]),
                               "--ros-args", "-r", f"__node:={n}{suffix}_host", "--params-file", str(hosts_yaml)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
             for suffix in suffixes for n in ("rgb", "pcd", "goal")]
    pinned_names = ["rgb_pin", "pcd_pin"] if args.pin else []
    procs += [subprocess.Popen([sys.executable, "-m", "gpc_ros.nodes.policy_host_node", "--ros-args", "-r",
                                f"__node:={n}_host", "--params-file", str(hosts_yaml)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for n in pinned_names]
    wire = Wire([n + suffix for suffix in suffixes for n in ("rgb", "pcd", "goal")] + pinned_names,
                endpoint={"rgb", "pcd", "goal", *pinned_names})
    stop, publishing = threading.Event(), threading.Lock()
    publisher = threading.Thread(target=wire.publish_observations, args=(stop, publishing), daemon=True)
    pause = HostPause(procs, publishing)
    in_process, two = {}, {}
    try:
        deadline = time.monotonic() + 300
        while not all(h.announced for h in wire.handles.values()):
            if time.monotonic() > deadline:
                raise SystemExit("hosts did not announce within 300 s")
            time.sleep(0.1)
        publisher.start()
        local, local_traced = {}, {}
        for n in ("rgb", "pcd"):
            parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n]))
            local[n] = HostCore(parent, observing)
            if args.traced:
                parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=True))
                local_traced[n] = HostCore(parent, observing)
        config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.5, 0.5), max_observation_age_s=5.0,
                                    max_observation_skew_s=5.0, encode_timeout_s=5.0, step_timeout_s=5.0)
        config = ComposerNodeConfig(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                       "composer": type(config.composer)(
                                           sampler=type(config.composer.sampler)("ddim", args.steps),
                                           parallel_parents=True, return_parent_chunks=False)})
        sequential = type(config.composer)(sampler=config.composer.sampler, return_parent_chunks=False)
        separate = GraphComposer(config, [wire.handles["rgb"], wire.handles["pcd"]])
        pool = GraphComposer(config, [wire.handles["rgb"], wire.handles["pcd"]], split_phase=False) if args.pool \
            else None
        before = GraphComposer(ComposerNodeConfig(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                                     "parents": ("rgb_before", "pcd_before")}),
                               [wire.handles["rgb_before"], wire.handles["pcd_before"]]) if args.before else None
        pinned_config = ComposerNodeConfig(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                              "parents": tuple(pinned_names)}) if args.pin else None
        pinned = GraphComposer(pinned_config, [wire.handles[n] for n in pinned_names]) if args.pin else None
        pinned_pool = GraphComposer(pinned_config, [wire.handles[n] for n in pinned_names], split_phase=False) \
            if args.pin and args.pool else None
        modes = [("sequential", False, False), ("threads", True, False), ("auto", "auto", False)]
        if args.traced:
            modes.append(("joint", "auto", True))
            if args.workers:
                modes.append(("spinning workers", "auto", "workers"))
        for mode, parallel, joint in modes:
            composer_config = replace(sequential, parallel_parents=parallel, joint_step=bool(joint),
                                      joint_encode=bool(joint), joint_step_workers=joint == "workers")
            for suffix, cores_ in (("", local), (", traced", local_traced)):
                if not cores_ or (joint and not suffix):
                    continue
                in_process[mode + suffix] = GraphComposer(
                    ComposerNodeConfig(**{**{f: getattr(config, f) for f in config.__dataclass_fields__},
                                          "composer": composer_config, "deployment": "in_process"}),
                    [LocalHost(cores_["rgb"]), LocalHost(cores_["pcd"])])
                in_process[mode + suffix].check_compatible()  # as the node does (with workers: they start here)
                two[mode + suffix] = Composer([cores_["rgb"].parent, cores_["pcd"].parent], composer_config)
        one = Composer([local["rgb"].parent], sequential)
        one_traced = Composer([local_traced["rgb"].parent], sequential) if args.traced else None
        t_obs = time.time()
        for core in (*local.values(), *local_traced.values()):
            fill(core, t_obs)
        obs = {n: c.window.at(t_obs)[0] for n, c in local.items()}
        w1, w2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
        goal_local = HostCore(GoalParent("goal", [0.6, 0.0, 0.4]), Observing("state", 1, 3))
        goal_local.window.add_state(0.0, np.array([0.45, 0.0, 0.4]))
        cases = {
            "one parent alone": lambda: one.compose(one.encode([obs["rgb"]]), w1, generator=0),
            "one parent alone, 2 torch threads": lambda: _threads(
                2, lambda: one.compose(one.encode([obs["rgb"]]), w1, generator=0)),
        }
        if one_traced is not None:
            cases["one parent alone, traced"] = lambda: one_traced.compose(one_traced.encode([obs["rgb"]]), w1,
                                                                           generator=0)
        for mode in two:
            cases[f"K=2 in-process Composer, {mode}"] = lambda c=two[mode]: c.compose(
                c.encode([obs["rgb"], obs["pcd"]]), w2, generator=0)
        for mode in in_process:
            cases[f"K=2 graph, in-process hosts, {mode}"] = lambda g=in_process[mode]: _checked(
                g.compose(t_obs + 0.01))
        local_cases = set(cases)  # the cases without a host process: also measured with the hosts stopped
        cases["K=2 graph, separate hosts"] = lambda: _checked(separate.compose(wire.now_s()))
        if pool is not None:
            cases["K=2 graph, separate, pool"] = lambda: _checked(pool.compose(wire.now_s()))
        if pinned is not None:
            cases[f"K=2 graph, separate, pinned {cores[0]}|{cores[1]}"] = lambda: _checked(pinned.compose(wire.now_s()))
        if pinned_pool is not None:
            cases[f"K=2 graph, pinned {cores[0]}|{cores[1]}, pool"] = lambda: _checked(
                pinned_pool.compose(wire.now_s()))
        sends = SendLog([wire.handles[n] for n in ("rgb", "pcd", *pinned_names)])
        if before is not None:
            cases["K=2 graph, separate, on main nodes"] = lambda: _checked(before.compose(wire.now_s()))
        setups = {"endpoint": "goal", **({"on main nodes": "goal_before"} if args.before else {})}
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        exchange: dict[str, list[float]] = {k: [] for k in setups}
        local_predict: dict[str, list[float]] = {k: [] for k in setups}
        for _ in range(3):  # warm-up
            for fn in cases.values():
                fn()
        joint_heads = [two["joint, traced"]._joint.head,
                       next(iter(in_process["joint, traced"]._composers.values()))[0]._joint.inner.head] \
            if args.traced else []
        spinning = {}  # case -> its SpinningHeadsStep
        if args.traced and args.workers:
            spinning = {"K=2 in-process Composer, spinning workers, traced": two["spinning workers, traced"]._joint,
                        "K=2 graph, in-process hosts, spinning workers, traced": next(iter(
                            in_process["spinning workers, traced"]._composers.values()))[0]._joint.inner}
            joint_heads += [step.head for step in spinning.values()]
            for name, step in spinning.items():
                if not step.wait_ready(120.0):
                    raise SystemExit(f"the worker of {name} was not ready within 120 s")
        for name, head in [*((c.parent.name, c.parent._denoiser) for c in local_traced.values()),
                           *(("joint", h) for h in joint_heads)]:  # traces are made in the background: wait,
            if not head.wait_for_traces(120.0):  # then warm them up too
                raise SystemExit(f"the traces of {name} were not made within 120 s")
        for fn in cases.values():
            fn()
        stopped_cases = {k: fn for k, fn in cases.items() if k in local_cases} if args.stopped_hosts else {}
        if stopped_cases:  # one pause before the timed rounds: the hosts must answer after it
            pause.stop()
            for fn in stopped_cases.values():
                fn()
            pause.resume()
            time.sleep(args.settle_s)
            _checked(separate.compose(wire.now_s()))
        for name, step in spinning.items():  # the worker traces its head in the background: until its chunk is traced
            deadline = time.monotonic() + 120.0
            while True:
                before_traced = step.worker_stats()[0]["traced"]
                cases[name]()
                if step.worker_stats()[0]["traced"] - before_traced == args.steps:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker of {name} did not answer a chunk traced within 120 s")
            step.reset_stats()
        traced_before = {name: step.worker_stats()[0]["traced"] for name, step in spinning.items()}
        times_stopped: dict[str, list[float]] = {k: [] for k in stopped_cases}
        cpu_stopped: dict[str, list[float]] = {k: [] for k in stopped_cases}
        host_cpu: dict[str, list[float]] = {k: [] for k in cases}  # the host processes' CPU time during each case
        # per condition, per spinning case: [head 1 s, wait s, steps in the worker, fallback steps, worker head ns,
        # worker head calls], summed over the timed chunks
        split = {c: {k: [0.0] * 6 for k in spinning} for c in ("running", "stopped")}
        # one traced parent's step (its predict: the head and the input / output handling around it) per condition,
        # to set against head 1 and the wait of the spinning cases: [s, calls], summed over its timed chunks
        alone = {c: [0.0, 0] for c in ("running", "stopped")}
        recording: list[str | None] = [None]
        if args.traced:
            traced_rgb = local_traced["rgb"].parent

            def predict(*a, inner=traced_rgb.predict, **k):
                if recording[0] is None:
                    return inner(*a, **k)
                t0 = time.perf_counter()
                out = inner(*a, **k)
                alone[recording[0]][0] += time.perf_counter() - t0
                alone[recording[0]][1] += 1
                return out
            traced_rgb.predict = predict  # also the traced K=2 cases' first parent, timed only in the case below
        x = torch.randn(1, 16, 3)
        for r in range(args.rounds):
            blocks = [("running", cases, times, cpu)]
            if stopped_cases:
                blocks.append(("stopped", stopped_cases, times_stopped, cpu_stopped))
            for condition, block, times_, cpu_ in (blocks if r % 2 == 0 else blocks[::-1]):  # no block always first
                if condition == "stopped":
                    pause.stop()
                order = list(block.items()) if (r // 2) % 2 == 0 else list(block.items())[::-1]  # no case first
                for name, fn in order:
                    sends.case = name if condition == "running" else None
                    step = spinning.get(name)
                    s0 = _split(step) if step is not None else None
                    hosts0 = pause.cpu_s() if condition == "running" else 0.0
                    recording[0] = condition if name == "one parent alone, traced" else None
                    cpu0 = time.process_time()
                    times_[name].append(timed(fn))
                    cpu_[name].append(time.process_time() - cpu0)
                    recording[0] = None
                    if condition == "running":
                        host_cpu[name].append(pause.cpu_s() - hosts0)
                    if step is not None:
                        split[condition][name] = [a + b - c for a, b, c in zip(split[condition][name], _split(step),
                                                                                s0)]
                if condition == "stopped":
                    pause.resume()
                    time.sleep(args.settle_s)  # the hosts take the observations sent meanwhile
            sends.case = None
            corr = 10_000 + r
            goal_local.encode(corr, 1.0)
            for setup, host in (setups.items() if r % 2 == 0 else list(setups.items())[::-1]):
                goal_handle = wire.handles[host]
                goal_handle.encode(corr, wire.now_s(), 32).event.wait(5.0)
                for step in range(args.steps):
                    exchange[setup].append(timed(lambda c=corr, k=step, h=goal_handle: h.predict(c, k, 50.0, (0, 0),
                                                                                                  x, 5.0)))
                    local_predict[setup].append(timed(lambda c=corr: goal_local.predict(c, x, 50.0)))
        load_after = os.getloadavg()
        base = statistics.median(times["one parent alone"])
        base_traced = statistics.median(times["one parent alone, traced"]) if args.traced else float("nan")
        print(f"\n  obs -> chunk, DDIM {args.steps} steps, median of {args.rounds} interleaved rounds:")
        print(f"  {'case':<54} {'median ms':>10} {'p90 ms':>8} {'x one parent':>13} {'x one traced':>13} "
              f"{'cpu ms':>8} {'hosts cpu ms':>13}")
        for name, values in times.items():
            med, p90 = statistics.median(values), float(np.percentile(values, 90))
            print(f"  {name:<54} {med * 1e3:10.1f} {p90 * 1e3:8.1f} {med / base:12.2f}x {med / base_traced:12.2f}x "
                  f"{statistics.median(cpu[name]) * 1e3:8.1f} {statistics.mean(host_cpu[name]) * 1e3:13.1f}")
        autos = [("K=2 in-process Composer, auto", two["auto"]),
                 ("K=2 graph, in-process hosts, auto", next(iter(in_process["auto"]._composers.values()))[0])]
        if args.traced:
            autos += [("K=2 in-process Composer, auto, traced", two["auto, traced"]),
                      ("K=2 graph, in-process hosts, auto, traced",
                       next(iter(in_process["auto, traced"]._composers.values()))[0])]
        if args.traced:
            for what, composer in (("K=2 in-process Composer, joint, traced", two["joint, traced"]),
                                   ("K=2 graph, in-process hosts, joint, traced",
                                    next(iter(in_process["joint, traced"]._composers.values()))[0])):
                print(f"  {what}: joint steps {composer.stats.joint_steps}, others "
                      f"{composer.stats.parallel_steps + composer.stats.sequential_steps}; torch inter-op threads "
                      f"{torch.get_num_interop_threads()}")
        for what, composer in autos:  # the graph's: the core Composer it built
            chooser, stats = composer.chooser, composer.stats
            print(f"  {what}: steps in threads {stats.parallel_steps}, one after the other {stats.sequential_steps}; "
                  f"step time threads / one after the other, median of the last {len(chooser.ratios)} adjacent "
                  f"pairs: {statistics.median(chooser.ratios):.2f}")
        for name, step in spinning.items():
            stats = step.worker_stats()[0]
            n = max(step.worker_steps + step.fallback_steps, 1)
            print(f"  {name}{' (both conditions)' if stopped_cases else ''}: steps with head 2 in the worker "
                  f"{step.worker_steps}, in process (fallback) "
                  f"{step.fallback_steps}; worker calls {stats['calls']}, of which traced "
                  f"{stats['traced'] - traced_before[name]}; per step: "
                  f"head 1 {step.head_s / n * 1e3:.2f} ms, wait after it {step.wait_s / n * 1e3:.2f} ms, worker's "
                  f"head 2 {stats['head_ms']:.2f} ms")
        for condition, (total, n) in alone.items():
            if n:
                print(f"  one parent alone, traced, hosts {condition}: {n} timed steps, per step (its predict: head "
                      f"and input / output handling) {total / n * 1e3:.2f} ms")
        for condition, rows in split.items():
            for name, (head, wait, steps, fallback, worker_ns, worker_n) in rows.items():
                if steps + fallback:
                    n = steps + fallback
                    print(f"  {name}, hosts {condition}: timed steps with head 2 in the worker {int(steps)}, "
                          f"fallback {int(fallback)}; per step: head 1 {head / n * 1e3:.2f} ms, wait after it "
                          f"{wait / n * 1e3:.2f} ms, worker's head 2 {worker_ns / max(worker_n, 1) * 1e-6:.2f} ms")
        if stopped_cases:
            base_s = statistics.median(times_stopped["one parent alone"])
            base_traced_s = statistics.median(times_stopped["one parent alone, traced"]) if args.traced \
                else float("nan")
            print(f"\n  the same cases with the host processes stopped (SIGSTOP) and the observation publisher "
                  f"paused,\n  same rounds (in-process deployment, no separate-host processes running); "
                  f"{pause.pauses} pauses, the longest {pause.longest_s:.2f} s:")
            print(f"  {'case':<54} {'median ms':>10} {'p90 ms':>8} {'x one parent':>13} {'x one traced':>13} "
                  f"{'cpu ms':>8} {'running/stopped':>16}")
            for name, values in times_stopped.items():
                med, p90 = statistics.median(values), float(np.percentile(values, 90))
                print(f"  {name:<54} {med * 1e3:10.1f} {p90 * 1e3:8.1f} {med / base_s:12.2f}x "
                      f"{med / base_traced_s:12.2f}x {statistics.median(cpu_stopped[name]) * 1e3:8.1f} "
                      f"{statistics.median(times[name]) / med:15.2f}x")
            if args.traced and args.workers:
                key = "K=2 graph, in-process hosts, spinning workers, traced"
                print(f"  in-process figure, {key}: "
                      f"{statistics.median(times_stopped[key]) / base_traced_s:.2f}x one traced parent "
                      f"(in-process deployment, no separate-host processes running), "
                      f"{statistics.median(times[key]) / base_traced:.2f}x with the bench's separate-host processes "
                      f"running (each against one traced parent measured in the same condition)")
                alone = "one parent alone, traced"
                for name in (key, "K=2 in-process Composer, spinning workers, traced"):
                    print(f"  paired, {name} / {alone}, hosts stopped: "
                          f"{paired_ratio(times_stopped[name], times_stopped[alone])}; hosts running: "
                          f"{paired_ratio(times[name], times[alone])}")
        print("\n  second host's request of a step sent after the first (median, p90; timed rounds only):")
        for name, gaps in sends.gaps().items():
            print(f"  {name:<36} {statistics.median(gaps) * 1e3:.3f} ms, p90 "
                  f"{float(np.percentile(gaps, 90)) * 1e3:.3f} ms ({len(gaps)} steps)")
        print("\n  per-step exchange (round trip to a host process minus the local predict):")
        for setup in setups:
            overhead = [a - b for a, b in zip(exchange[setup], local_predict[setup])]
            print(f"  {setup:<14} {len(overhead)} steps: median {statistics.median(overhead) * 1e3:.2f} ms, "
                  f"p90 {float(np.percentile(overhead, 90)) * 1e3:.2f} ms, min {min(overhead) * 1e3:.2f} ms "
                  f"(round trip {statistics.median(exchange[setup]) * 1e3:.2f} ms, local predict "
                  f"{statistics.median(local_predict[setup]) * 1e3:.3f} ms)")
        serial = [timed(lambda: _serialise_round_trip(x)) for _ in range(200)]
        print(f"  of which serialisation (request + reply: pack, to Float64MultiArray, back, unpack; no DDS): "
              f"median {statistics.median(serial) * 1e3:.3f} ms")
        print(f"  load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    finally:
        pause.resume()  # (if an error left them stopped: a stopped process would not take the SIGINT below)
        for closable in (*in_process.values(), *two.values()):  # stops the spinning workers
            closable.close()
        stop.set()
        wire.close()
        interrupt_all(procs)
        lease.release()
    return 0


def _serialise_round_trip(x: torch.Tensor) -> None:
    """What one step costs in (de)serialisation on both sides, without DDS or an executor."""
    from gpc_ros.nodes import conversions

    request = protocol.predict_request(1, 0, 50.0, (0, 0), x.numpy())
    received = conversions.exchange_from_msg(conversions.exchange_to_msg(request))
    reply = protocol.Exchange(protocol.KIND_PREDICT, 1, 0, 0.0, 0, 0, 32, 1, received.tensor)
    conversions.exchange_from_msg(conversions.exchange_to_msg(reply))


def _split(step) -> list[float]:
    """A spinning step's running totals: head 1 s, wait s, steps in the worker, fallback steps, the worker's head ns
    and its head calls (the worker's are read from its shared flags; :meth:`SpinningHeadsStep.worker_stats`)."""
    from gpc_ros.policies.spin_worker import HEAD_N, HEAD_NS

    flags = step.workers[0].flags
    return [step.head_s, step.wait_s, step.worker_steps, step.fallback_steps, float(flags[HEAD_NS]),
            float(flags[HEAD_N])]


def _threads(n: int, fn):
    """``fn()`` with ``n`` torch intra-op threads (process-global), then back to 1."""
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(1)


def _checked(result) -> None:
    if result.actions is None:
        raise RuntimeError(f"no chunk from the separate hosts: {result.reason}")


if __name__ == "__main__":
    raise SystemExit(main())
