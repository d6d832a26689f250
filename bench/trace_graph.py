"""Where the time of a K = 2 separate-host chunk goes: a per-step timeline of the composer and both host processes.

Why the separate hosts' steps did not overlap (docs/graph.md): this runs the ``bench_graph.py`` parents (``small``
RGB diffusion and DP3, random weights, DDIM 10 steps, batch 1) in host processes whose request handler is wrapped
to record, per request, on CLOCK_MONOTONIC (common to all processes of the machine): when the request arrived, when
the parent's compute began and ended, the dispatch thread's CPU time and run-queue wait over the compute
(``/proc/self/task/<tid>/schedstat``: time runnable but not running, i.e. waiting for a core) and the CPU it ran on;
the composer side records when each request was sent (and from which CPU) and each reply delivered, and every
process's CPU time per chunk is read from ``/proc/<pid>/task/*/schedstat``. Pairs of hosts:

* ``free``: no affinity (the kernel places them);
* ``pinned``: each host pinned to a core of its own (``cpu_affinity``), the first two CPUs this process may use.

Cases interleaved round by round: ``one parent alone`` (the plain in-process Composer, the ratio's base), each pair's
K = 2 chunk, and the RGB host alone through the exchange (``one remote host``). Per pair it prints: the chunk's
median; per step and host the compute's wall time, CPU time and run-queue wait (medians); the share of steps in which
both hosts computed on the same CPU (and how often that was the CPU the composer had sent from); how much the
two computes overlapped (intersection / the shorter one); the
delay between the two requests going out; and the composer's gap between a step's last reply and the next step's
first request.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/trace_graph.py [--rounds N]``.
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
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_graph import KEYS, Wire, _checked, fill, write_checkpoints  # noqa: E402, F401

from gpc_ros.compose import Composer  # noqa: E402
from gpc_ros.graph import composition  # noqa: E402
from gpc_ros.graph.composition import ComposerNodeConfig, GraphComposer  # noqa: E402
from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402
from gpc_ros.leases import acquire  # noqa: E402
from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env  # noqa: E402
from gpc_ros.testing.processes import interrupt_all  # noqa: E402

#: A policy_host_node process whose request handler records the timeline (one JSON line per request).
TRACED_HOST = r'''
import json, os, sys, threading, time
from gpc_ros.nodes import conversions, policy_host_node
from gpc_ros.nodes.spin import spin_node
out = open(os.environ["GPC_TRACE_FILE"], "a", buffering=1)
def sched():
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        run, wait, _ = f.read().split()
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as f:
        cpu = int(f.read().rsplit(")", 1)[1].split()[36])
    return int(run), int(wait), cpu
def on_request(self, msg):
    t_in = time.monotonic_ns()
    request = conversions.exchange_from_msg(msg)
    run0, wait0, cpu0 = sched()
    t0 = time.monotonic_ns()
    reply = self.core.answer(request)
    t1 = time.monotonic_ns()
    run1, wait1, cpu1 = sched()
    self.reply_pub.publish(conversions.exchange_to_msg(reply))
    out.write(json.dumps({"host": self.core.name, "kind": request.kind, "corr": request.correlation_id,
                          "step": request.step, "t_in": t_in, "t0": t0, "t1": t1, "t_out": time.monotonic_ns(),
                          "run": run1 - run0, "wait": wait1 - wait0, "cpu0": cpu0, "cpu1": cpu1}) + "\n")
policy_host_node.PolicyHostNode.on_request = on_request
spin_node(policy_host_node.PolicyHostNode, sys.argv[1:], threads=2, fast_exit=True)
'''

PAIRS = {"free": ("rgb", "pcd"), "pinned": ("rgb_pin", "pcd_pin")}


def current_cpu() -> int:
    """The CPU the calling thread runs on (field 39 of /proc/self/task/<tid>/stat)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def process_cpu_s(pid: int) -> float:
    """CPU time of process ``pid``'s live threads (sum of their ``schedstat`` run times), s."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return total * 1e-9


class ComposerTrace:
    """Send and delivery times of every request on the composer side (RemoteHost wrapped), and the CPU it was sent
    from."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, int, int], int] = {}
        self.sent_cpu: dict[tuple[str, int, int], int] = {}
        self.delivered: dict[tuple[str, int, int], int] = {}
        submit, deliver = composition.RemoteHost._submit, composition.RemoteHost.deliver

        def traced_submit(handle, request):
            key = (handle.name, request.correlation_id, request.step)
            self.sent[key], self.sent_cpu[key] = time.monotonic_ns(), current_cpu()
            return submit(handle, request)

        def traced_deliver(handle, reply):
            self.delivered[(handle.name, reply.correlation_id, reply.step)] = time.monotonic_ns()
            return deliver(handle, reply)

        composition.RemoteHost._submit, composition.RemoteHost.deliver = traced_submit, traced_deliver


def summarise(pair: str, names: tuple[str, str], corrs: list[int], hosts: dict, trace: ComposerTrace,
              steps: int) -> None:
    med = statistics.median
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    wait = {n: [] for n in names}
    same, overlap, skew, gap, woken_there = [], [], [], [], []
    for corr in corrs:
        for step in range(steps):
            recs = [hosts.get((n, corr, step)) for n in names]
            if not all(recs):
                continue
            for n, rec in zip(names, recs):
                wall[n].append((rec["t1"] - rec["t0"]) / 1e6)
                cpu[n].append(rec["run"] / 1e6)
                wait[n].append(rec["wait"] / 1e6)
            a, b = recs
            same.append(a["cpu1"] == b["cpu1"])
            shorter = min(a["t1"] - a["t0"], b["t1"] - b["t0"])
            overlap.append(max(0, min(a["t1"], b["t1"]) - max(a["t0"], b["t0"])) / max(shorter, 1))
            sent = [trace.sent.get((n, corr, step)) for n in names]
            if all(sent):
                skew.append(abs(sent[1] - sent[0]) / 1e6)
            last_sender = trace.sent_cpu.get((names[int(sent[1] > sent[0])], corr, step)) if all(sent) else None
            if a["cpu1"] == b["cpu1"] and last_sender is not None:
                woken_there.append(last_sender == a["cpu1"])
            before = [trace.delivered.get((n, corr, step - 1)) for n in names]
            if step > 0 and all(before) and all(sent):
                gap.append((min(sent) - max(before)) / 1e6)
    if not same:
        print(f"  {pair}: no complete steps recorded")
        return
    print(f"  {pair} pair ({names[0]}, {names[1]}), {len(same)} steps:")
    for n in names:
        print(f"    {n:<8} compute wall {med(wall[n]):6.2f} ms, CPU time {med(cpu[n]):6.2f} ms, "
              f"run-queue wait {med(wait[n]):6.2f} ms (medians per step)")
    print(f"    both hosts computed on the same CPU in {100 * sum(same) / len(same):.0f} % of the steps; "
          f"compute overlap median {med(overlap):.2f} (mean {sum(overlap) / len(overlap):.2f})")
    if woken_there:
        share = 100 * sum(woken_there) / len(woken_there)
        print(f"    in {share:.0f} % of those steps that CPU was the one the composer sent the second request from")
    if skew and gap:
        print(f"    second request sent {med(skew):.3f} ms after the first (median); composer gap between a step's "
              f"last reply and the next step's requests {med(gap):.3f} ms (median)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cores = sorted(os.sched_getaffinity(0))[:2]
    load_before = os.getloadavg()
    print(f"trace_graph: {os.cpu_count()} cores, load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f} (1/5/15 min)")
    tmp = Path(tempfile.mkdtemp(prefix="trace-graph-"))
    checkpoints = write_checkpoints(tmp)
    lease = acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1))
    env = graph_env(lease.value)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")})
    import yaml

    blocks = {}
    for pair, names in PAIRS.items():
        for n, cpu in zip(names, cores):
            blocks[f"{n}_host"] = {"ros__parameters": {
                "name": n, "checkpoint": checkpoints[n.split("_")[0]], "torch_threads": 1,
                "cpu_affinity": str(cpu) if pair == "pinned" else ""}}
    (tmp / "hosts.yaml").write_text(yaml.safe_dump(blocks))
    host_file = tmp / "hosts.jsonl"
    names = [n for pair in PAIRS.values() for n in pair]
    procs = [subprocess.Popen([sys.executable, "-c", TRACED_HOST, "--ros-args", "-r", f"__node:={n}_host",
                               "--params-file", str(tmp / "hosts.yaml")],
                              env={**env, "GPC_TRACE_FILE": str(host_file)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for n in names]
    wire = Wire(names, endpoint=set(names))
    trace = ComposerTrace()
    stop = threading.Event()
    publisher = threading.Thread(target=wire.publish_observations, args=(stop,), daemon=True)
    try:
        deadline = time.monotonic() + 300
        while not all(h.announced for h in wire.handles.values()):
            if time.monotonic() > deadline:
                raise SystemExit("hosts did not announce within 300 s")
            time.sleep(0.1)
        publisher.start()
        base = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.5, 0.5), max_observation_age_s=5.0,
                                  max_observation_skew_s=5.0, encode_timeout_s=5.0, step_timeout_s=5.0)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        sampler = type(base.composer.sampler)("ddim", args.steps)
        parallel = type(base.composer)(sampler=sampler, parallel_parents=True, return_parent_chunks=False)
        graphs = {pair: GraphComposer(ComposerNodeConfig(**{**fields, "composer": parallel, "parents": names}),
                                      [wire.handles[n] for n in names]) for pair, names in PAIRS.items()}
        remote_one = GraphComposer(ComposerNodeConfig(**{**fields, "composer": parallel, "parents": ("rgb",),
                                                        "weights": (1.0,)}), [wire.handles["rgb"]])
        for i, graph in enumerate([*graphs.values(), remote_one]):
            graph._correlation = 1_000_000 * (i + 1)  # correlation ids unique over the whole trace
        parent, observing = load_host_parent(HostConfig(name="rgb", checkpoint=checkpoints["rgb"]))
        local = HostCore(parent, observing)
        t_obs = time.time()
        fill(local, t_obs)
        obs = local.window.at(t_obs)[0]
        one = Composer([local.parent], type(parallel)(sampler=sampler, return_parent_chunks=False))
        w1 = torch.tensor([1.0], dtype=torch.float64)
        corrs: dict[str, list[int]] = {pair: [] for pair in PAIRS}

        def run_pair(pair: str) -> None:
            result = graphs[pair].compose(wire.now_s())
            _checked(result)
            corrs[pair].append(result.correlation_id)

        cases = {"one parent alone (in process)": lambda: one.compose(one.encode([obs]), w1, generator=0),
                 "one remote host (rgb)": lambda: _checked(remote_one.compose(wire.now_s())),
                 **{f"K=2 separate, {pair}": (lambda p=pair: run_pair(p)) for pair in PAIRS}}
        deadline = time.monotonic() + 60
        while any(g.compose(wire.now_s()).actions is None for g in graphs.values()):
            if time.monotonic() > deadline:
                raise SystemExit("the hosts have no observation after 60 s")
            time.sleep(0.2)
        for _ in range(3):  # warm-up
            for fn in cases.values():
                fn()
        for pair in PAIRS:
            corrs[pair].clear()
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpu_used: dict[str, list[float]] = {k: [] for k in cases}  # composer + host processes, CPU s per chunk
        pids = [os.getpid(), *(p.pid for p in procs)]
        for r in range(args.rounds):
            for name, fn in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
                c0 = [process_cpu_s(pid) for pid in pids]
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu_used[name].append([b - a for a, b in zip(c0, (process_cpu_s(pid) for pid in pids))])
        load_after = os.getloadavg()
        time.sleep(0.5)  # the last host lines
        hosts = {}
        for line in host_file.read_text().splitlines():
            rec = json.loads(line)
            hosts[(rec["host"], rec["corr"], rec["step"])] = rec
        base_s = statistics.median(times["one parent alone (in process)"])
        print(f"\n  obs -> chunk, DDIM {args.steps} steps, median of {args.rounds} interleaved rounds:")
        print(f"  {'case':<32} {'median':>11} {'x alone':>8}   CPU per chunk (mean): composer process, hosts")
        for name, values in times.items():
            per_process = np.mean(np.array(cpu_used[name]), axis=0) * 1e3
            print(f"  {name:<32} {statistics.median(values) * 1e3:8.1f} ms {statistics.median(values) / base_s:7.2f}x"
                  f"   {per_process[0]:6.1f} ms, " + ", ".join(f"{n} {v:.1f}" for n, v in zip(names, per_process[1:]))
                  + " ms")
        print("\n  per step (host side: the parent's compute only; CLOCK_MONOTONIC across processes):")
        for pair, names in PAIRS.items():
            summarise(pair, names, corrs[pair], hosts, trace, args.steps)
        print(f"  load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    finally:
        stop.set()
        wire.close()
        interrupt_all(procs)
        lease.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
