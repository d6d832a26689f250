"""Two traced heads per denoising step: what handing the second head to another thread costs (docs/graph.md, s10).

The composer's ``parallel_parents`` path hands the second parent's forward to a pool thread at EVERY step and waits
for it; ``bench/probe_traced_overlap.py`` hands over a block of ``--inner`` forwards at once. This times, per step
(blocks of 10 steps, interleaved, median of ``--reps``), for the shipped ``small`` RGB diffusion and DP3 heads
traced and frozen (1 row, 1 torch thread):

* ``one``: one head; ``seq``: both heads one after the other;
* ``threads per step``: head B submitted to a 2-thread pool, head A on this thread, then wait (the composer's path);
* ``threads block``: the 10 steps of head B as one pool job, head A's 10 on this thread (the overlap probe's case);
* ``fork/wait per step``: one scripted module per step that ``torch.jit.fork``s head B onto torch's inter-op
  pool, runs head A and waits (the hand-over in C++, no GIL).

Run: ``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_traced_handoff.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from probe_traced_overlap import ForkSecond, _heads, _trace  # bench/, next to this script


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(2)
    warnings.filterwarnings("ignore")
    print("load before", os.getloadavg(), "torch", torch.__version__)
    unets, x, t, c = _heads()
    tr = [_trace(u, x[i], t[i], c[i]) for i, u in enumerate(unets)]
    with torch.no_grad():  # a scripted module cannot hold frozen ones: script over plain traces, then freeze
        raw = [torch.jit.trace(u, (x[i], t[i], c[i])) for i, u in enumerate(unets)]
    two = torch.jit.freeze(torch.jit.script(ForkSecond(raw[0], raw[1])).eval(), optimize_numerics=False)
    pool = ThreadPoolExecutor(2)

    def call(i):
        with torch.no_grad():  # grad mode is per thread
            return tr[i](x[i], t[i], c[i])

    with torch.no_grad():
        both = two(x[0], t[0], c[0], x[1], t[1], c[1])
        print("fork/wait bit-identical:", torch.equal(both[0], call(0)), torch.equal(both[1], call(1)))

    def per_step():
        for _ in range(10):
            f = pool.submit(call, 1)
            call(0)
            f.result()

    def block():
        f = pool.submit(lambda: [call(1) for _ in range(10)])
        for _ in range(10):
            call(0)
        f.result()

    def fork():
        for _ in range(10):
            two(x[0], t[0], c[0], x[1], t[1], c[1])

    cases = {"one": lambda: [call(0) for _ in range(10)], "seq": lambda: [(call(0), call(1)) for _ in range(10)],
             "threads per step": per_step, "threads block": block, "fork/wait per step": fork}
    times = {k: [] for k in cases}
    with torch.no_grad():
        for f in cases.values():
            f()
            f()
        for r in range(args.reps):
            items = list(cases.items())
            for k, f in (items if r % 2 == 0 else items[::-1]):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["one"])
    print("load after", os.getloadavg())
    for k, v in times.items():
        print(f"{k:20s} {statistics.median(v) * 100:.3f} ms/step  {statistics.median(v) / base:.2f}x one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
