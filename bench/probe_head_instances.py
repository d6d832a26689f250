"""How much one traced head's speed depends on the instance, on how its module was made and on the CPU (session 19,
docs/graph.md: why the spinning worker's head runs 5–15 % slower than head 1).

The bench_graph RGB parent (``small`` diffusion, random weights), 1 torch thread, no ROS. Three probes, each timing
calls interleaved round by round (order alternating), medians in µs:

* ``instances``: ``--instances`` one-parent Composers, each with the parent loaded anew from the checkpoint (own
  module, own trace), whole 10-step chunks (ms) on CPU 0;
* ``reload``: the head of one parent traced (``TracedHead``) from its own module and from copies made as the
  spinning worker gets its module (``torch.save`` of the module, ``torch.load`` back), each traced on the calling
  thread and in the background (and one copy whose parameters and buffers are cloned after loading), both parents,
  on CPU 0;
* ``cpus``: one traced head, the calling thread pinned to CPU 0 and CPU 1 in turn (the other CPU idle).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/probe_head_instances.py [instances|reload|cpus]...`` (under the CPU
lock; all three by default).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    from bench_graph import fill, write_checkpoints

    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.compose.sampler import SamplerConfig
    from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent
    from gpc_ros.policies.traced import TracedHead

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probes", nargs="*", help="instances, reload, cpus (default: all three)")
    ap.add_argument("--instances", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args(argv)
    probes = args.probes or ["instances", "reload", "cpus"]
    unknown = sorted(set(probes) - {"instances", "reload", "cpus"})
    if unknown:
        ap.error(f"unknown probe(s) {unknown}: choose from instances, reload, cpus")
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"probe_head_instances: load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {args.rounds} rounds")
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-instances-")))
    t_obs = time.time()

    def loaded(name: str):
        parent, observing = load_host_parent(HostConfig(name=name, checkpoint=checkpoints[name], trace_head=True))
        core = HostCore(parent, observing)
        fill(core, t_obs)
        return parent, core.window.at(t_obs)[0]

    def interleaved(fns: dict, rounds: int, scale: float, warmup: int = 20) -> dict[str, list[float]]:
        """``warmup`` untimed rounds, then ``rounds`` timed ones (order alternating): per name, times / ``scale``."""
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(rounds):
            for name, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
                t0 = time.perf_counter_ns()
                fn()
                times[name].append((time.perf_counter_ns() - t0) / scale)
        return times

    cpus = sorted(os.sched_getaffinity(0))
    if "instances" in probes:
        os.sched_setaffinity(0, {cpus[0]})
        config = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
        w1 = torch.tensor([1.0], dtype=torch.float64)
        fns = {}
        for i in range(args.instances):
            parent, obs = loaded("rgb")
            composer = Composer([parent], config)
            parent._denoiser.wait_for_traces(120.0)
            fns[f"instance {i} (made {i + 1}.)"] = lambda c=composer, o=obs: c.compose(c.encode([o]), w1, generator=0)
        times = interleaved(fns, args.rounds, 1e6)
        print(f"\n  instances: whole chunks, ms (median, p10), {args.rounds} rounds")
        for name, v in times.items():
            print(f"  {name:<22} {statistics.median(v):7.2f} {sorted(v)[len(v) // 10]:7.2f}")
        os.sched_setaffinity(0, set(cpus))
    if "reload" in probes:
        os.sched_setaffinity(0, {cpus[0]})
        heads, inputs = {}, {}
        for name in ("rgb", "pcd"):
            parent, obs = loaded(name)
            inputs[name] = parent._denoiser_inputs(torch.randn(1, parent.action_horizon, parent.action_dim), 50.0,
                                                   parent.encode(obs))
            module = parent._denoiser.module
            raw = io.BytesIO()
            torch.save(module, raw)
            for background in (False, True):
                copy = torch.load(io.BytesIO(raw.getvalue()), weights_only=False).eval()
                heads[f"{name} own module, bg={background}"] = TracedHead(module, background=background)
                heads[f"{name} saved+loaded, bg={background}"] = TracedHead(copy, background=background)
            copy = torch.load(io.BytesIO(raw.getvalue()), weights_only=False).eval()
            with torch.no_grad():
                for t in (*copy.parameters(), *copy.buffers()):
                    t.data = t.data.clone()
            heads[f"{name} saved+loaded+cloned, bg=True"] = TracedHead(copy, background=True)
        with torch.no_grad():
            for name, head in heads.items():
                head(*inputs[name.split()[0]])
                head.wait_for_traces(120.0)
            fns = {name: (lambda h=head, x=inputs[name.split()[0]]: h(*x)) for name, head in heads.items()}
            times = interleaved(fns, args.rounds, 1e3)
        print(f"\n  reload: one head call, us (median), {args.rounds} rounds")
        for name, v in times.items():
            print(f"  {name:<30} {statistics.median(v):7.0f}  traced calls {heads[name].calls_traced}")
        os.sched_setaffinity(0, set(cpus))
    if "cpus" in probes and len(cpus) >= 2:
        parent, obs = loaded("rgb")
        x = parent._denoiser_inputs(torch.randn(1, parent.action_horizon, parent.action_dim), 50.0, parent.encode(obs))
        head = TracedHead(parent._denoiser.module, background=False)
        per: dict[int, list[float]] = {cpus[0]: [], cpus[1]: []}
        with torch.no_grad():
            for _ in range(20):
                head(*x)
            for r in range(args.rounds):
                for cpu in (cpus[:2] if r % 2 == 0 else cpus[1::-1]):
                    os.sched_setaffinity(0, {cpu})
                    head(*x)  # the first call after the move is not timed
                    t0 = time.perf_counter_ns()
                    for _ in range(3):
                        head(*x)
                    per[cpu].append((time.perf_counter_ns() - t0) / 3e3)
        os.sched_setaffinity(0, set(cpus))
        a, b = (statistics.median(per[c]) for c in cpus[:2])
        ratio = statistics.median(y / x_ for x_, y in zip(per[cpus[0]], per[cpus[1]]))
        print(f"\n  cpus: one head call on CPU {cpus[0]} {a:.0f} us, on CPU {cpus[1]} {b:.0f} us; per round CPU "
              f"{cpus[1]} / CPU {cpus[0]}: {ratio:.3f}")
    load = os.getloadavg()
    print(f"  load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
