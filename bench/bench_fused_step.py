"""One denoising step of the parents' U-Net heads: one head vs two heads one after the other vs two heads in ONE
call (torch.func vmap over stacked weights; the hand-built grouped forward of
:class:`~gpc_ros.policies.fused_unet1d.GroupedUnet1D`), at the shipped size (figures: docs/graph.md, session 10).

Heads: the ``small`` preset's RGB diffusion and DP3 U-Nets (random weights, 1.57 M parameters each), batch
``--rows`` (1 = one candidate, no parent chunks, as in ``bench/bench_graph.py``), horizon 16, 1 torch thread.
Cases are interleaved rep by rep (order reversed every rep); each figure is the median over ``--reps`` reps of a
block of ``--inner`` calls; ratios are to ``one head`` (eager) and to ``one head, fused code path (K = 1)`` (the
fused forward with one head: what its leaner Python costs alone), and for the traced cases also to ``one head, traced``
(``torch.jit.trace`` + ``torch.jit.freeze``: the same ops without the Python module calls). Also times both parents'
observation encoders (once per chunk) for their share of a chunk. Every fused result is checked against the
separate forwards (max abs diff printed; the run fails above 1e-5).

Run: ``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/bench_fused_step.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
from grouped_unet1d import GroupedUnet1D  # bench/, next to this script

from gpc_ros.policies import make_policy
from gpc_ros.policies.encoders.observation import random_observation
from gpc_ros.policies.presets import policy_config

KEYS = {"action": [3], "observation.state": [3], "observation.image": [96, 96, 3], "observation.pointcloud": [512, 3]}


class _Fused(torch.nn.Module):
    """Two heads' :class:`GroupedUnet1D` as a module of flat tensor arguments (what ``torch.jit.trace`` takes)."""

    def __init__(self, grouped: GroupedUnet1D) -> None:
        super().__init__()
        self.grouped = grouped

    def forward(self, x0, x1, t0, t1, c0, c1):
        return tuple(self.grouped([x0, x1], [t0, t1], [c0, c1]))


def _profile(cases: dict, calls: int) -> int:
    """Print the top ops by self CPU time of ``calls`` calls of each case (after 20 warm-up calls)."""
    from torch.profiler import profile

    with torch.no_grad():
        for name, fn in cases.items():
            for _ in range(20):
                fn()
            with profile() as prof:
                for _ in range(calls):
                    fn()
            print(f"\n  {name}: {calls} calls")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--profile", action="store_true",
                        help="instead: torch.profiler's top ops (self CPU time) of one head and of the fused two heads")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the traced branch on B is fixed: B = rows
    load = os.getloadavg()
    print(f"bench_fused_step: torch {torch.__version__}, {os.cpu_count()} cores, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    torch.manual_seed(0)
    policies = [make_policy(t, policy_config(t, "small", KEYS)).eval() for t in ("diffusion", "dp3")]
    a, b = (p.unet for p in policies)
    m = args.rows
    x = [torch.randn(m, 16, 3), torch.randn(m, 16, 3)]
    t = [torch.full((m,), 37.0), torch.full((m,), 12.0)]
    c = [torch.randn(m, policies[0].encoding_dim), torch.randn(m, policies[1].encoding_dim)]
    grouped, same = GroupedUnet1D([a, b], conv="bmm"), GroupedUnet1D([a, a], conv="bmm")
    grouped_conv = GroupedUnet1D([a, b], conv="grouped")
    lean = GroupedUnet1D([a], conv="bmm")  # the fused code path with one head: what the fused forward costs alone

    params, buffers = torch.func.stack_module_state([a, b])
    base = copy.deepcopy(a).to("meta")

    def one_call(p, bf, xi, ti, ci):
        return torch.func.functional_call(base, (p, bf), (xi, ti, ci))

    vmapped = torch.func.vmap(one_call)
    with torch.no_grad():
        traced = [torch.jit.freeze(torch.jit.trace(u, (x[i], t[i], c[i]))) for i, u in enumerate((a, b))]
        fused_traced = torch.jit.freeze(torch.jit.trace(_Fused(grouped), (*x, *t, *c), check_trace=False).eval())
    xs, ts, cs = torch.stack(x), torch.stack(t), torch.stack(c)
    if args.profile:
        return _profile({"one head": lambda: a(x[0], t[0], c[0]),
                         "two heads, fused: unfold + bmm": lambda: grouped(x, t, c)}, args.reps)
    obs = [random_observation(p.config.observation, seed=0) for p in policies]
    cases = {
        "one head": lambda: a(x[0], t[0], c[0]),
        "two heads, one after the other": lambda: (a(x[0], t[0], c[0]), b(x[1], t[1], c[1])),
        "one head, fused code path (K = 1)": lambda: lean(x[:1], t[:1], c[:1]),
        "two heads, fused: unfold + bmm": lambda: grouped(x, t, c),
        "same head twice, fused: unfold + bmm": lambda: same(x, t, c),
        "two heads, fused: grouped conv": lambda: grouped_conv(x, t, c),
        "two heads, torch.func vmap": lambda: vmapped(params, buffers, xs, ts, cs),
        "one head, traced": lambda: traced[0](x[0], t[0], c[0]),
        "two heads, traced, one after the other": lambda: (traced[0](x[0], t[0], c[0]), traced[1](x[1], t[1], c[1])),
        "two heads, fused (unfold + bmm), traced": lambda: fused_traced(*x, *t, *c),
        "RGB encoder (once per chunk)": lambda: policies[0].encode(obs[0]),
        "DP3 encoder (once per chunk)": lambda: policies[1].encode(obs[1]),
    }
    with torch.no_grad():
        ref = [a(x[0], t[0], c[0]), b(x[1], t[1], c[1])]
        diff_g = max(float((r - o).abs().max()) for f in (grouped, grouped_conv, lambda *v: fused_traced(*x, *t, *c))
                     for r, o in zip(ref, f(x, t, c)))
        diff_g = max(diff_g, float((lean(x[:1], t[:1], c[:1])[0] - ref[0]).abs().max()))
        diff_t = max(float((traced[i](x[i], t[i], c[i]) - ref[i]).abs().max()) for i in range(2))
        diff_v = max(float((r - o).abs().max()) for r, o in zip(ref, vmapped(params, buffers, xs, ts, cs)))
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(5):
            for fn in cases.values():
                fn()
        for r in range(args.reps):
            for name, fn in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
                t0 = time.perf_counter()
                for _ in range(args.inner):
                    fn()
                times[name].append((time.perf_counter() - t0) / args.inner)
    base_s, traced_s = statistics.median(times["one head"]), statistics.median(times["one head, traced"])
    lean_s = statistics.median(times["one head, fused code path (K = 1)"])
    print(f"  {m} row(s); median of {args.reps} reps x {args.inner} calls, interleaved:")
    print(f"  {'case':<40} {'median ms':>10} {'x one head':>11} {'x K = 1 path':>13} {'x one head, traced':>19}")
    for name, values in times.items():
        med = statistics.median(values)
        vs_lean = f"{med / lean_s:12.2f}x" if "fused" in name else " " * 13
        vs_traced = f"{med / traced_s:18.2f}x" if "traced" in name else ""
        print(f"  {name:<40} {med * 1e3:10.3f} {med / base_s:10.2f}x {vs_lean} {vs_traced}")
    print(f"  max abs diff vs separate eager forwards: fused {diff_g:.3g}, vmap {diff_v:.3g}, "
          f"traced heads {diff_t:.3g}")
    if max(diff_g, diff_v, diff_t) > 1e-5:
        raise SystemExit("a fused result differs from the separate forwards by more than 1e-5")
    load = os.getloadavg()
    print(f"  load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
