"""Issue #12's separate-process figure on its own: K = 2 policy hosts in processes of their own against ONE host in a
process of its own, with nothing else running (session 20, docs/graph.md).

``bench_graph.py`` runs five host processes at once (two free, two pinned, a goal host) and its separate-host case
competes with the three idle ones and their observation subscriptions. A lab's deployment runs one process per
parent. This bench starts exactly two host processes (``policy_host_node``, 1 torch thread each, exchange on the
endpoint, as ``gpc-ros bringup`` starts them) and a 10 Hz observation publisher, and times, interleaved round by
round (order alternating):

* ``one parent in process``: the plain Composer with the RGB parent, encode + sample, 1 torch thread (the
  ``one parent alone`` of bench_graph);
* ``one host, separate``: the graph's composer core here, the RGB host in its process (every step over DDS): the
  separate deployment with one parent, the like-for-like baseline;
* ``K=2 hosts, separate``: the same with both hosts (weights 0.5 / 0.5; the two hosts' steps overlap).

``--trace-head`` runs both hosts (and the in-process parent) with frozen TorchScript heads (``trace_head: true``).
``--pin`` pins the hosts to a CPU each (``cpu_affinity``). Printed: medians, the per-round ratios with a 95 %
bootstrap interval, the hosts' CPU time per chunk, the load before and after.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_separate.py [--rounds N] [--trace-head] [--unet-down-dims ..]``
(under the CPU lock; about 2 minutes at the shipped size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

ONE = "one parent in process"
ONE_HOST = "one host, separate"
TWO_HOSTS = "K=2 hosts, separate"


def main(argv: list[str] | None = None) -> int:
    import yaml
    from bench_graph import HostPause, Wire, fill, median_ci, write_checkpoints

    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.compose.sampler import SamplerConfig
    from gpc_ros.graph.composition import ComposerNodeConfig, GraphComposer
    from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent
    from gpc_ros.leases import acquire
    from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--trace-head", action="store_true", help="frozen TorchScript heads in the hosts and in process")
    ap.add_argument("--pin", action="store_true", help="pin host i to the i-th CPU this process may use")
    ap.add_argument("--unet-down-dims", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                    help="both parents' U-Net channels, e.g. 256,512,1024 (Diffusion Policy's); default: the shipped "
                         "small preset's")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"bench_separate: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {args.rounds} "
          f"rounds, trace_head {args.trace_head}, pinned hosts {args.pin}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-separate-"))
    checkpoints = write_checkpoints(tmp, args.unet_down_dims)
    lease = acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1))
    env = graph_env(lease.value)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")})
    cpus = sorted(os.sched_getaffinity(0))
    blocks = {}
    for i, n in enumerate(("rgb", "pcd")):
        params = {"name": n, "checkpoint": checkpoints[n], "torch_threads": 1, "trace_head": args.trace_head}
        if args.pin:
            params["cpu_affinity"] = str(cpus[i % len(cpus)])
        blocks[f"{n}_host"] = {"ros__parameters": params}
    hosts_yaml = tmp / "hosts.yaml"
    hosts_yaml.write_text(yaml.safe_dump(blocks))
    procs = [subprocess.Popen([sys.executable, "-m", "gpc_ros.nodes.policy_host_node", "--ros-args", "-r",
                               f"__node:={n}_host", "--params-file", str(hosts_yaml)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for n in ("rgb", "pcd")]
    wire = Wire(["rgb", "pcd"], endpoint={"rgb", "pcd"})
    stop, publishing = threading.Event(), threading.Lock()
    publisher = threading.Thread(target=wire.publish_observations, args=(stop, publishing), daemon=True)
    hosts_cpu = HostPause(procs, publishing)  # only its CPU-time reading is used
    try:
        deadline = time.monotonic() + 300
        while not all(h.announced for h in wire.handles.values()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("the hosts did not announce within 300 s (or one exited)")
            time.sleep(0.1)
        publisher.start()
        time.sleep(1.0)  # the hosts' first observations
        sampler = SamplerConfig("ddim", 10)
        node = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.5, 0.5), max_observation_age_s=5.0,
                                  max_observation_skew_s=5.0, encode_timeout_s=10.0, step_timeout_s=10.0,
                                  composer=ComposerConfig(sampler=sampler, parallel_parents=True,
                                                          return_parent_chunks=False))
        two = GraphComposer(node, [wire.handles["rgb"], wire.handles["pcd"]])
        one_host = GraphComposer(ComposerNodeConfig(**{**{f: getattr(node, f) for f in node.__dataclass_fields__},
                                                       "parents": ("rgb",), "weights": (1.0,)}),
                                 [wire.handles["rgb"]])
        core = HostCore(*load_host_parent(HostConfig(name="rgb", checkpoint=checkpoints["rgb"],
                                                     trace_head=args.trace_head)))
        t_obs = time.time()
        fill(core, t_obs)
        obs = core.window.at(t_obs)[0]
        one = Composer([core.parent], ComposerConfig(sampler=sampler, return_parent_chunks=False))
        w1 = torch.tensor([1.0], dtype=torch.float64)

        def remote(g: GraphComposer):
            result = g.compose(wire.now_s())
            if result.actions is None:
                raise SystemExit(f"no chunk from the separate hosts: {result.reason}")

        cases = {ONE: lambda: one.compose(one.encode([obs]), w1, generator=0),
                 ONE_HOST: lambda: remote(one_host), TWO_HOSTS: lambda: remote(two)}
        for _ in range(args.warmup):  # the hosts' traces (made in the background) and DDS warm up
            for fn in cases.values():
                fn()
        times = {c: [] for c in cases}
        cpu = {c: [] for c in cases}
        order = list(cases)
        for r in range(args.rounds):
            for case in (order if r % 2 == 0 else order[::-1]):
                c0 = hosts_cpu.cpu_s()
                t0 = time.perf_counter()
                cases[case]()
                times[case].append((time.perf_counter() - t0) * 1e3)
                cpu[case].append((hosts_cpu.cpu_s() - c0) * 1e3)
        load = os.getloadavg()
        base = statistics.median(times[ONE])
        print("\n  obs -> chunk ms (DDIM 10 steps), medians over rounds; hosts cpu ms: both host processes' CPU time "
              "per chunk (mean; 10 ms ticks)")
        for case in cases:
            med = statistics.median(times[case])
            print(f"  {case:<28} {med:8.2f} ms  {med / base:6.3f}x {ONE}   "
                  f"hosts cpu {statistics.fmean(cpu[case]):6.1f} ms")
        for case, against in ((TWO_HOSTS, ONE_HOST), (TWO_HOSTS, ONE), (ONE_HOST, ONE)):
            med, lo, hi = median_ci([a / b for a, b in zip(times[case], times[against])])
            print(f"  per round, {case} / {against}: median {med:.3f}x, 95 % interval {lo:.3f}-{hi:.3f}x")
        print(f"  load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return 0
    finally:
        stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        wire.close()
        lease.release()


if __name__ == "__main__":
    raise SystemExit(main())
