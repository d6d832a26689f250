"""Where a chunk's time goes outside the heads: K = 2 spinning workers (plain Composer and the graph's in-process
hosts) against one traced parent, phase by phase (session 16b, docs/graph.md).

The bench_graph parents (``small`` RGB diffusion + DP3 point cloud, random weights, DDIM 10, one candidate, no
parent chunks, 1 torch thread); no ROS, no host processes. Cases interleaved round by round (order alternating):
``one traced`` (the plain Composer with the traced RGB parent), ``one traced pcd`` (the second parent alone: its
head's time in process, for the wait), ``K=2 plain spinning`` and ``K=2 graph spinning`` (joint encode + joint step,
head 2 in a spinning worker). Options: ``--swap-cpus`` (composing thread and worker on each other's CPU),
``--ab`` (every case also with the code of commit ``--ab-commit``: the Composer's and the graph's methods swapped
in, and composers of their own whose spinning step, caller side and worker process, is that commit's
``spin_worker``; same rounds, paired differences; session 17), ``--no-instrument`` (chunk totals only). Phases
are timed inside the package by wrapping methods at class level with ``time.perf_counter_ns`` (inclusive times,
summed per chunk; the wrapper itself costs ~1 us a call, a few dozen calls a chunk); each figure is the median
over rounds of the per-chunk sum, in ms. (Session 16b's ``--split-call``, the sections of
``SpinningHeadsStep.__call__``, went with session 17: the composer calls ``start`` and ``rest`` now.)

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/probe_chunk_phases.py [--rounds N]`` (under the CPU lock).
"""

from __future__ import annotations

import argparse
import collections
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
from bench_graph import fill, write_checkpoints  # noqa: E402

from gpc_ros.compose import (  # noqa: E402
    Composer,
    ComposerConfig,
    horizon,  # noqa: E402
)
from gpc_ros.compose import composer as composer_module  # noqa: E402
from gpc_ros.compose.sampler import DiffusersSampler, Sampler, SamplerConfig  # noqa: E402
from gpc_ros.graph import composition  # noqa: E402
from gpc_ros.graph.composition import ComposerNodeConfig, GraphComposer, LocalHost  # noqa: E402
from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402
from gpc_ros.policies import spin_worker  # noqa: E402
from gpc_ros.policies.adapter import ModuleParent  # noqa: E402
from gpc_ros.policies.traced import TracedHead  # noqa: E402

ACC: collections.Counter[str] = collections.Counter()


def wrap(owner: object, name: str, label: str) -> None:
    """Time every call of ``owner.name`` into ``ACC[label]`` (inclusive)."""
    inner = getattr(owner, name)
    clock = time.perf_counter_ns

    def timed(*a, **k):
        t0 = clock()
        try:
            return inner(*a, **k)
        finally:
            ACC[label] += clock() - t0

    setattr(owner, name, timed)


def instrument() -> None:
    wrap(Composer, "encode", "encode (Composer.encode)")
    wrap(GraphComposer, "_encode", "encode (graph: window + joint encode)")
    wrap(GraphComposer, "compose", "graph compose total")
    wrap(GraphComposer, "_sample", "graph _sample")
    wrap(Composer, "compose", "Composer.compose")
    wrap(Sampler, "run", "sampler.run (all steps)")
    wrap(DiffusersSampler, "step", "sampler step (DDIM)")
    wrap(Composer, "denoise", "denoise")
    wrap(Composer, "_parent_input", "_parent_input")
    wrap(Composer, "_convert", "_convert (checks + to_eps_x0)")
    wrap(composer_module, "combine", "combine")
    wrap(horizon.WeightedSum, "add", "WeightedSum.add (combine as they come)")
    wrap(ModuleParent, "predict", "ModuleParent.predict")
    wrap(ModuleParent, "_denoiser_inputs", "_denoiser_inputs")
    wrap(ModuleParent, "_prediction", "_prediction")
    wrap(TracedHead, "__call__", "head (TracedHead call, caller)")
    wrap(spin_worker.SpinningHeadsStep, "start", "SpinningHeadsStep.start (post, head 1)")
    wrap(spin_worker.SpinningHeadsStep, "_collect", "SpinningHeadsStep._collect (wait, others)")
    wrap(spin_worker.SpinningHeadsStep, "new_chunk", "SpinningHeadsStep.new_chunk")
    wrap(spin_worker.SpinningHeadsStep, "end_chunk", "SpinningHeadsStep.end_chunk")
    wrap(spin_worker._Worker, "post", "worker post")
    wrap(spin_worker._Worker, "result", "worker result (wait + clone)")
    wrap(composition.LocalJointStep, "start", "LocalJointStep.start")
    wrap(composition.PendingLocalStep, "rest", "PendingLocalStep.rest")
    wrap(composition.LocalJointStep, "_answer", "LocalJointStep._answer (host checks)")
    wrap(HostCore, "step_encoding", "host step_encoding")
    wrap(HostCore, "step_result", "host step_result")


OLD_COMMIT = "55f3156"
"""The code before session 17 (main after session 16b), for ``--ab`` (``--ab-commit``)."""


def old_code(commit: str) -> tuple[list[tuple[object, str, object]], object]:
    """The code of ``commit`` for the A/B: ``(class, name, function)`` for the Composer's and the graph's methods
    that run on the composing thread (swapped in around each old-code case) and the old ``spin_worker`` module,
    importable (a file in a temporary folder on ``sys.path``, which spawned workers inherit), whose
    ``SpinningHeadsStep`` (caller side and worker loop) the old-code composers use."""
    import importlib
    import subprocess
    import types

    root = Path(__file__).resolve().parent.parent

    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True,
                              cwd=root).stdout

    def load(path: str, name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(source(path), f"{commit}:{path}", "exec"), module.__dict__)
        return module

    old_composer = load("gpc_ros/compose/composer.py", "old_ab_composer")
    old_composition = load("gpc_ros/graph/composition.py", "old_ab_composition")
    folder = Path(tempfile.mkdtemp(prefix="probe-ab-"))
    (folder / "old_ab_spin_worker.py").write_text(source("gpc_ros/policies/spin_worker.py"))
    sys.path.insert(0, str(folder))
    old_spin = importlib.import_module("old_ab_spin_worker")
    return [(Composer, "denoise", old_composer.Composer.denoise),
            (Composer, "_convert", old_composer.Composer._convert),
            (composition.LocalJointStep, "__call__", old_composition.LocalJointStep.__call__)], old_spin


def with_old(fn, methods):
    """``fn`` run with the old methods in place of the new ones (put back after)."""
    def run():
        saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in methods]
        for owner, name, f in methods:
            setattr(owner, name, f)
        try:
            return fn()
        finally:
            for owner, name, f in saved:
                setattr(owner, name, f)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--swap-cpus", action="store_true",
                    help="pin the composing thread to the second CPU and the workers to the first (the default is "
                         "the other way round): is the worker's head slower because of its CPU?")
    ap.add_argument("--ab", action="store_true",
                    help="also every case with the code of --ab-commit (the Composer's and the graph's methods "
                         "swapped in, the spinning step and its worker the old module's), interleaved")
    ap.add_argument("--ab-commit", default=OLD_COMMIT, help=f"the old code for --ab (default {OLD_COMMIT})")
    ap.add_argument("--no-instrument", action="store_true", help="chunk totals only (no wrappers)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"probe_chunk_phases: {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{args.rounds} rounds")
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-phases-")))
    cores = {}
    for n in ("rgb", "pcd"):
        parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=True))
        cores[n] = HostCore(parent, observing)
    rgb_alone, _ = load_host_parent(HostConfig(name="rgb", checkpoint=checkpoints["rgb"], trace_head=True))
    pcd_alone, _ = load_host_parent(HostConfig(name="pcd", checkpoint=checkpoints["pcd"], trace_head=True))
    t_obs = time.time()
    for core in cores.values():
        fill(core, t_obs)
    obs = {n: c.window.at(t_obs)[0] for n, c in cores.items()}
    sequential = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
    spin = replace(sequential, parallel_parents="auto", joint_step=True, joint_encode=True, joint_step_workers=True)
    one = Composer([rgb_alone], sequential)
    one_pcd = Composer([pcd_alone], sequential)  # the second head's time in process, for the wait
    plain = Composer([cores["rgb"].parent, cores["pcd"].parent], spin)
    node = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.5, 0.5), max_observation_age_s=1e9,
                              max_observation_skew_s=5.0, encode_timeout_s=5.0, step_timeout_s=5.0,
                              deployment="in_process")
    node = replace(node, composer=spin)
    graph = GraphComposer(node, [LocalHost(cores["rgb"]), LocalHost(cores["pcd"])])
    graph.check_compatible()
    eager_ref = Composer([load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n]))[0] for n in ("rgb", "pcd")],
                         sequential)  # untraced heads, one after the other
    w1, w2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    chunks: dict[str, torch.Tensor] = {}

    def graph_chunk():
        r = graph.compose(t_obs + 0.01)
        if r.actions is None:
            raise SystemExit(f"graph chunk refused: {r.reason}")
        chunks["K=2 graph spinning"] = (r.actions, r.seed)
        return r

    cases = {
        "one traced": lambda: one.compose(one.encode([obs["rgb"]]), w1, generator=0),
        "one traced pcd": lambda: one_pcd.compose(one_pcd.encode([obs["pcd"]]), w1, generator=0),
        "K=2 plain spinning": lambda: chunks.__setitem__(
            "K=2 plain spinning", (plain.compose(plain.encode([obs["rgb"], obs["pcd"]]), w2, generator=0).actions, 0)),
        "K=2 graph spinning": graph_chunk,
    }
    steps = {"K=2 plain spinning": plain._joint, "K=2 graph spinning":
             next(iter(graph._composers.values()))[0]._joint.inner}
    closing = [one, one_pcd, plain, eager_ref, graph]
    if args.ab:  # the same cases on composers whose spinning step (caller side and worker) is the old commit's
        methods, old_spin = old_code(args.ab_commit)
        plain_old = Composer([cores["rgb"].parent, cores["pcd"].parent], spin)
        plain_old._joint.close()
        plain_old._joint = old_spin.SpinningHeadsStep(plain_old.parents)
        cores_old = {}
        for n in ("rgb", "pcd"):
            parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=True))
            cores_old[n] = HostCore(parent, observing)
            fill(cores_old[n], t_obs)
        graph_old = GraphComposer(node, [LocalHost(cores_old["rgb"]), LocalHost(cores_old["pcd"])])
        graph_old.check_compatible()
        local = next(iter(graph_old._composers.values()))[0]._joint
        local.inner.close()
        local.inner = old_spin.SpinningHeadsStep(local.inner.parents)
        closing += [plain_old, graph_old]

        def graph_chunk_old():
            r = graph_old.compose(t_obs + 0.01)
            if r.actions is None:
                raise SystemExit(f"graph chunk refused: {r.reason}")
            chunks["K=2 graph spinning, old code"] = (r.actions, r.seed)

        def plain_chunk_old():
            chunks["K=2 plain spinning, old code"] = (
                plain_old.compose(plain_old.encode([obs["rgb"], obs["pcd"]]), w2, generator=0).actions, 0)
        cases.update({"one traced, old code": with_old(cases["one traced"], methods),
                      "K=2 plain spinning, old code": with_old(plain_chunk_old, methods),
                      "K=2 graph spinning, old code": with_old(graph_chunk_old, methods)})
        steps.update({"K=2 plain spinning, old code": plain_old._joint, "K=2 graph spinning, old code": local.inner})
    for step in steps.values():
        if not step.wait_ready(120.0):
            raise SystemExit("worker not ready")
        if args.swap_cpus and step.pin:
            step.cpus = [step.cpus[1], step.cpus[0], *step.cpus[2:]]
            for w in step.workers:
                os.sched_setaffinity(w.process.pid, {step.cpus[1]})
        print(f"  composing thread on CPU {step.cpus[0] if step.pin else '-'}, workers on "
              f"{[os.sched_getaffinity(w.process.pid) for w in step.workers]}")
    for head in (rgb_alone._denoiser, pcd_alone._denoiser, cores["rgb"].parent._denoiser, cores["pcd"].parent._denoiser,
                 *(s.head for s in steps.values())):
        head.wait_for_traces(120.0)
    for _ in range(30):  # warm-up, until the workers' traces are made
        for fn in cases.values():
            fn()
    for step in steps.values():
        step.reset_stats()
    if not args.no_instrument:
        instrument()
    per: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in cases}
    for r in range(args.rounds):
        order = list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]
        for name, fn in order:
            ACC.clear()
            s = steps.get(name)
            split0 = (s.head_s, s.wait_s) if s is not None else None
            t0 = time.perf_counter_ns()
            fn()
            total = time.perf_counter_ns() - t0
            per[name]["chunk total (wall)"].append(total / 1e6)
            for label, ns in ACC.items():
                per[name][label].append(ns / 1e6)
            if s is not None:
                per[name]["  of which head 1 (step.head_s)"].append((s.head_s - split0[0]) * 1e3)
                per[name]["  of which wait (step.wait_s)"].append((s.wait_s - split0[1]) * 1e3)
                # the spinning step's time outside head 1, the wait, inputs, post, outputs
                if not args.no_instrument and ACC["SpinningHeadsStep.start (post, head 1)"]:
                    rest = ACC["SpinningHeadsStep.start (post, head 1)"] + ACC[
                        "SpinningHeadsStep._collect (wait, others)"] - ACC["worker post"] - ACC["_prediction"] - (
                        ACC["_denoiser_inputs"]) - (s.head_s - split0[0] + s.wait_s - split0[1]) * 1e9
                    per[name]["  SpinningHeadsStep start + _collect, the rest"].append(rest / 1e6)
    # results must be the eager sequential Composer's
    for name, (c, seed) in chunks.items():
        ref = eager_ref.compose(eager_ref.encode([obs["rgb"], obs["pcd"]]), w2, generator=seed).actions
        same = torch.equal(c, ref[0, 0]) if c.dim() == 2 else torch.equal(c, ref)
        print(f"  {name}: torch.equal to the eager sequential Composer's chunk: {same}")
    for name, s in steps.items():
        print(f"  {name}: steps in the worker {s.worker_steps}, fallback {s.fallback_steps}, "
              f"worker {s.worker_stats()}")
    labels = []
    for d in per.values():
        for k in d:
            if k not in labels:
                labels.append(k)
    print(f"\nmedian ms per chunk over {args.rounds} rounds (inclusive phase times, summed per chunk):")
    names = list(cases)
    print(f"{'phase':44s}" + "".join(f"{n:>22s}" for n in names))
    for label in labels:
        cells = []
        for n in names:
            v = per[n].get(label)
            cells.append(f"{statistics.median(v):22.3f}" if v else f"{'—':>22s}")
        print(f"{label:44s}" + "".join(cells))
    pairs = [(n, n + ", old code") for n in names if n + ", old code" in per]
    if pairs:
        print("\nnew - old code, paired by round (the two ran in the same round), ms: median [quartiles]; "
              "negative = the new code faster")
        for new, old in pairs:
            d = sorted(a - b for a, b in zip(per[new]["chunk total (wall)"], per[old]["chunk total (wall)"]))
            q = statistics.quantiles(d, n=4)
            print(f"  {new:30s} {statistics.median(d):+7.3f} [{q[0]:+7.3f}, {q[2]:+7.3f}]  "
                  f"new faster in {sum(x < 0 for x in d)} of {len(d)} rounds")
    load = os.getloadavg()
    print(f"load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for c in closing:
        c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
