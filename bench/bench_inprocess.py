"""Issue #12's in-process figure on its own: K = 2 composition in the composer's process against one traced parent,
with an interval (session 19, docs/graph.md).

``bench_graph.py`` measures every deployment side by side, ~20 cases in 40 rounds; its one-parent baseline is one
Composer instance, and on this 2-core VM identical instances of the same model differ by 2–8 % (each has its own
traced, frozen copy of the weights: memory layout) while the machine's speed drifts by ~10 % between runs. So the
K = 2 ratio moved by ±0.04 from run to run. This bench times only the three cases of the figure, each as
``--instances`` independent instances (own parents loaded from the checkpoints, own traces, own worker process):

* ``one traced parent``: the plain Composer with the traced RGB parent (the baseline);
* ``one traced parent, graph (one in-process host)``: the same parent as the graph's only host (the deployment's own
  one-parent baseline: it too assembles the observation from the host's window for every chunk);
* ``K=2 Composer, spinning workers``: the plain Composer, both traced parents, joint encode and joint step, head 2 in a
  spinning worker process (``joint_step_workers``);
* ``K=2 graph, in-process hosts, spinning workers``: the graph's ``GraphComposer`` with both hosts in its process and
  the same composer settings (the deployment ``composer_node`` runs with ``deployment: in_process``);
* ``one traced parent, thread pinned to CPU 0`` / ``... CPU 1``: the baseline's own instances with the calling thread
  pinned to each CPU in turn (the spinning step runs head 1 on the first CPU and the worker on the second: is one
  CPU slower in this run?).

The bench_graph parents (``small`` RGB diffusion + DP3, random weights, DDIM 10, one candidate, 1 torch thread, no
ROS). Every round runs every instance of every case once, in an order that alternates; a case's time in a round is the
mean over its instances. Printed: per case the median over rounds and its ratio to the baseline's; the per-round
ratios' median with a 95 % bootstrap interval (the cases of one round ran within ~0.5 s of each other, so the
machine's drift cancels); each instance's median (the instance spread). Every K = 2 chunk of the last round is checked
``torch.equal`` to the eager sequential Composer's.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_inprocess.py [--rounds N] [--instances N]`` (under the CPU lock).
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

BASE = "one traced parent"
BASE_GRAPH = "one traced parent, graph (one in-process host)"
PLAIN = "K=2 Composer, spinning workers"
GRAPH = "K=2 graph, in-process hosts, spinning workers"
ON_CPU = "one traced parent, thread pinned to CPU {}"


def main(argv: list[str] | None = None) -> int:
    from bench_graph import fill, median_ci, write_checkpoints

    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.compose.sampler import SamplerConfig
    from gpc_ros.graph.composition import ComposerNodeConfig, GraphComposer, LocalHost
    from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--instances", type=int, default=2, help="independent instances of each case")
    ap.add_argument("--unet-down-dims", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                    help="both parents' U-Net channels, e.g. 256,512,1024 (Diffusion Policy's); default: the shipped "
                         "small preset's")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up rounds (until the workers' traces are made)")
    ap.add_argument("--pinned", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the baseline with its thread pinned to each CPU in turn")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"bench_inprocess: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{args.rounds} rounds, {args.instances} instances of each case")
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="bench-inprocess-")), args.unet_down_dims)
    t_obs = time.time()

    def core(name: str, trace: bool = True) -> HostCore:
        c = HostCore(*load_host_parent(HostConfig(name=name, checkpoint=checkpoints[name], trace_head=trace)))
        fill(c, t_obs)
        return c

    probe = {n: core(n) for n in ("rgb", "pcd")}
    obs = {n: c.window.at(t_obs)[0] for n, c in probe.items()}
    sequential = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
    spin = replace(sequential, parallel_parents="auto", joint_step=True, joint_encode=True, joint_step_workers=True)
    node = replace(ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.5, 0.5), max_observation_age_s=1e9,
                                      max_observation_skew_s=5.0, encode_timeout_s=5.0, step_timeout_s=5.0,
                                      deployment="in_process"), composer=spin)
    w1, w2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    eager = Composer([core(n, trace=False).parent for n in ("rgb", "pcd")], sequential)
    closing: list = [eager]
    cpus = sorted(os.sched_getaffinity(0))
    pinned = [ON_CPU.format(c) for c in cpus[:2]] if len(cpus) >= 2 and args.pinned else []
    runs: dict[str, list] = {BASE: [], BASE_GRAPH: [], PLAIN: [], GRAPH: [], **{name: [] for name in pinned}}
    single = replace(node, parents=("rgb",), weights=(1.0,), composer=sequential)
    spinning: dict[str, list] = {PLAIN: [], GRAPH: []}
    heads = []
    for _ in range(args.instances):
        one = Composer([core("rgb").parent], sequential)
        plain = Composer([core("rgb").parent, core("pcd").parent], spin)
        graph = GraphComposer(node, [LocalHost(core("rgb")), LocalHost(core("pcd"))])
        graph.check_compatible()  # as the node does (the worker starts here)
        graph_one = GraphComposer(single, [LocalHost(core("rgb"))])
        graph_one.check_compatible()
        closing += [one, plain, graph, graph_one]
        heads.append(graph_one.handles["rgb"].core.parent._denoiser)
        heads += [one.parents[0]._denoiser, plain._joint.head]
        spinning[PLAIN].append(plain._joint)
        spinning[GRAPH].append(next(iter(graph._composers.values()))[0]._joint.inner)
        runs[BASE].append(lambda c=one: (c.compose(c.encode([obs["rgb"]]), w1, generator=0).actions, 0))
        for cpu, name in zip(cpus, pinned):
            runs[name].append(lambda c=one, cpu=cpu: _pinned(cpu, lambda: (c.compose(c.encode([obs["rgb"]]), w1,
                                                                                        generator=0).actions, 0)))
        runs[BASE_GRAPH].append(lambda g=graph_one: _actions(g.compose(t_obs + 0.01)))
        runs[PLAIN].append(lambda c=plain: (c.compose(c.encode([obs["rgb"], obs["pcd"]]), w2, generator=0).actions, 0))
        runs[GRAPH].append(lambda g=graph: _actions(g.compose(t_obs + 0.01)))
    heads += [s.head for s in spinning[GRAPH]]
    try:
        for step in (*spinning[PLAIN], *spinning[GRAPH]):
            if not step.wait_ready(120.0):
                raise SystemExit("a spinning worker was not ready within 120 s")
        for head in heads:
            if not head.wait_for_traces(120.0):
                raise SystemExit("the traces were not made within 120 s")
        for _ in range(args.warmup):  # until the workers' traces are made too
            for fns in runs.values():
                for fn in fns:
                    fn()
        traced_before = {}
        for step in (*spinning[PLAIN], *spinning[GRAPH]):
            step.reset_stats()
            traced_before[id(step)] = sum(st["traced"] for st in step.worker_stats())
        flat = [(case, i, fn) for case, fns in runs.items() for i, fn in enumerate(fns)]
        times = {(case, i): [] for case, i, _ in flat}
        last: dict[tuple[str, int], tuple[torch.Tensor, int]] = {}
        for r in range(args.rounds):
            for case, i, fn in (flat if r % 2 == 0 else flat[::-1]):
                t0 = time.perf_counter()
                out = fn()
                times[(case, i)].append((time.perf_counter() - t0) * 1e3)
                last[(case, i)] = out
        load = os.getloadavg()
        per_round = {case: [statistics.fmean(times[(case, i)][r] for i in range(args.instances))
                            for r in range(args.rounds)] for case in runs}
        print(f"\n  chunk ms (DDIM 10 steps): per round the mean over the {args.instances} instances of a case; "
              f"medians over {args.rounds} rounds")
        base = statistics.median(per_round[BASE])
        for case in runs:
            med = statistics.median(per_round[case])
            spread = ", ".join(f"{statistics.median(times[(case, i)]):.2f}" for i in range(args.instances))
            print(f"  {case:<48} {med:7.2f} ms  {med / base:6.3f}x {BASE} (instances: {spread} ms)")
        for case, against in ((PLAIN, BASE), (GRAPH, BASE), (BASE_GRAPH, BASE), (GRAPH, BASE_GRAPH)):
            med, lo, hi = median_ci([k / b for k, b in zip(per_round[case], per_round[against])])
            print(f"  per round, {case} / {against}: median {med:.3f}x, 95 % interval {lo:.3f}-{hi:.3f}x")
        if pinned:
            med, lo, hi = median_ci([b / a for a, b in zip(per_round[pinned[0]], per_round[pinned[1]])])
            print(f"  per round, {pinned[1]} / {pinned[0]}: median {med:.3f}x, 95 % interval {lo:.3f}-{hi:.3f}x")
        med, lo, hi = median_ci([g - p for g, p in zip(per_round[GRAPH], per_round[PLAIN])])
        print(f"  per round, {GRAPH} - {PLAIN}: median {med:+.2f} ms, 95 % interval {lo:+.2f} to {hi:+.2f} ms")
        for case, steps in spinning.items():
            n = max(sum(s.worker_steps + s.fallback_steps for s in steps), 1)
            fallback = sum(s.fallback_steps for s in steps)
            head = sum(s.head_s for s in steps) / n * 1e3
            wait = sum(s.wait_s for s in steps) / n * 1e3
            worker = statistics.fmean(s.worker_stats()[0]["head_ms"] for s in steps)
            calls = sum(st["calls"] for s in steps for st in s.worker_stats())
            traced = sum(st["traced"] for s in steps for st in s.worker_stats()) - sum(
                traced_before[id(s)] for s in steps)
            print(f"  {case}: per step head 1 {head:.3f} ms, wait after it {wait:.3f} ms, the worker's head "
                  f"{worker:.3f} ms; steps run in process (fallback) {fallback}; worker calls {calls}, "
                  f"answered by its trace {traced}")
        encodings = eager.encode([obs["rgb"], obs["pcd"]])
        same = all(torch.equal(out.reshape(-1), eager.compose(encodings, w2, generator=seed).actions.reshape(-1))
                   for (case, _), (out, seed) in last.items() if case in (PLAIN, GRAPH))
        print(f"  every K = 2 chunk of the last round torch.equal to the eager sequential Composer's: {same}")
        print(f"  load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return 0 if same else 1
    finally:
        for c in closing:
            c.close()


def _pinned(cpu: int, fn):
    """``fn()`` with the calling thread pinned to ``cpu`` (its affinity restored after)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, before)


def _actions(result) -> tuple[torch.Tensor, int]:
    """A graph chunk's actions and the seed it drew its noise with (refused chunks stop the bench)."""
    if result.actions is None:
        raise SystemExit(f"the graph refused a chunk: {result.reason}")
    return result.actions, result.seed


if __name__ == "__main__":
    raise SystemExit(main())
