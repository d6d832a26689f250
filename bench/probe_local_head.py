"""Which parent's head should run on the composing thread? K = 2 spinning workers with the parents in either order
(session 19, docs/graph.md).

The bench_graph parents (``small`` RGB diffusion + DP3, random weights, DDIM 10, one candidate, no parent chunks, 1
torch thread, no ROS). Cases interleaved round by round (order alternating): one traced parent alone (each), the
plain Composer with ``joint_step_workers`` and the parents as ``rgb, pcd`` (the RGB head on the composing thread, the
DP3 head in the worker) and as ``pcd, rgb`` (the other way round). Prints the medians, the paired per-round
differences (with a bootstrap 95 % interval of their median) and each spinning step's head / wait split. Every K = 2
chunk is checked ``torch.equal`` to the eager sequential Composer's of the same order.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/probe_local_head.py [--rounds N]`` (under the CPU lock).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    from bench_graph import fill, median_ci, write_checkpoints

    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.compose.sampler import SamplerConfig
    from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"probe_local_head: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{args.rounds} rounds")
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-local-")))

    def parent(n: str, trace: bool = True):
        return load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=trace))

    t_obs = time.time()
    obs = {}
    for n in ("rgb", "pcd"):
        core = HostCore(*parent(n))
        fill(core, t_obs)
        obs[n] = core.window.at(t_obs)[0]
    sequential = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
    spin = replace(sequential, parallel_parents="auto", joint_step=True, joint_encode=True, joint_step_workers=True)
    orders = {"rgb, pcd": ("rgb", "pcd"), "pcd, rgb": ("pcd", "rgb")}
    one = {n: Composer([parent(n)[0]], sequential) for n in ("rgb", "pcd")}
    two = {label: Composer([parent(n)[0] for n in order], spin) for label, order in orders.items()}
    eager = {label: Composer([parent(n, trace=False)[0] for n in order], sequential)
             for label, order in orders.items()}
    w1, w2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    refs = {label: c.compose(c.encode([obs[n] for n in orders[label]]), w2, generator=0).actions
            for label, c in eager.items()}
    for c in two.values():
        if not c._joint.wait_ready(120.0):
            raise SystemExit("worker not ready")
    for c in (*one.values(), *two.values()):
        for p in c.parents:
            p._denoiser.wait_for_traces(120.0)
        if len(c.parents) > 1:
            c._joint.head.wait_for_traces(120.0)

    def k2(label: str):
        c = two[label]
        out = c.compose(c.encode([obs[n] for n in orders[label]]), w2, generator=0).actions
        if not torch.equal(out, refs[label]):
            raise SystemExit(f"K=2 {label}: chunk differs from the eager Composer's")

    cases = {"one traced rgb": lambda: one["rgb"].compose(one["rgb"].encode([obs["rgb"]]), w1, generator=0),
             "one traced pcd": lambda: one["pcd"].compose(one["pcd"].encode([obs["pcd"]]), w1, generator=0),
             **{f"K=2 {label} (2nd in the worker)": (lambda label=label: k2(label)) for label in orders}}
    for _ in range(30):
        for fn in cases.values():
            fn()
    for c in two.values():
        c._joint.reset_stats()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.rounds):
        for name, fn in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    print(f"\n  chunk ms, median of {args.rounds} interleaved rounds; every K = 2 chunk torch.equal to the eager "
          f"Composer's")
    base = statistics.median(times["one traced rgb"])
    for name, v in times.items():
        print(f"  {name:<36} {statistics.median(v):7.2f} ms  {statistics.median(v) / base:5.3f}x one traced rgb")
    a, b = (f"K=2 {label} (2nd in the worker)" for label in orders)
    med, lo, hi = median_ci([y - x for x, y in zip(times[a], times[b])])
    print(f"  paired per round, [{b}] - [{a}]: median {med:+.2f} ms, 95 % interval [{lo:+.2f}, {hi:+.2f}]")
    for name in (a, b):
        med, lo, hi = median_ci([y / x for x, y in zip(times["one traced rgb"], times[name])])
        print(f"  paired per round, [{name}] / [one traced rgb]: median {med:.3f}x, 95 % interval [{lo:.3f}, {hi:.3f}]")
    for label, c in two.items():
        step = c._joint
        n = max(step.worker_steps + step.fallback_steps, 1)
        stats = step.worker_stats()[0]
        print(f"  K=2 {label}: steps in the worker {step.worker_steps}, fallback {step.fallback_steps}; per step: "
              f"head 1 {step.head_s / n * 1e3:.3f} ms, wait after it {step.wait_s / n * 1e3:.3f} ms, worker's head "
              f"{stats['head_ms']:.3f} ms")
    load = os.getloadavg()
    print(f"  load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for c in (*one.values(), *two.values(), *eager.values()):
        c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
