"""Do two frozen TorchScript U-Net heads overlap on 2 cores? (docs/graph.md, session 10, traced heads.)

One denoising step of the shipped ``small`` RGB diffusion and DP3 heads (random weights, 1 row, horizon 16,
1 intra-op torch thread), a block of ``--inner`` calls per case, cases interleaved rep by rep (order reversed every
rep), median over ``--reps``:

* ``eager one`` / ``traced one`` / ``scripted one``: one head alone;
* ``* two seq``: both heads one after the other;
* ``* two threads``: each head's block on its own pool thread (2 threads), each under ``torch.no_grad()`` (grad
  mode is per thread); ``traced two threads, grad on``: the same with grad mode on in the pool threads (what a pool
  thread has unless it sets it);
* ``traced fork/wait``: one scripted wrapper that ``torch.jit.fork``s head A and runs head B, then waits
  (TorchScript's own inter-op pool, ``torch.set_num_interop_threads(2)``);
* ``procs two`` / ``procs one``: two worker processes (1 torch thread each, each with its own traced head),
  released together by a barrier; the case's time is from the first start to the last end
  (``time.perf_counter`` is CLOCK_MONOTONIC, one clock for all processes); ``procs one`` = only worker 0 runs.

Also: how far a pure-Python counter in the main thread keeps running while another thread runs traced forwards
(1.0 = the forward never holds the GIL). Prints the load average before and after.

Run: ``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_traced_overlap.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

KEYS = {"action": [3], "observation.state": [3], "observation.image": [96, 96, 3], "observation.pointcloud": [512, 3]}


def _heads():
    from gpc_ros.policies import make_policy
    from gpc_ros.policies.presets import policy_config

    torch.manual_seed(0)
    pols = [make_policy(t, policy_config(t, "small", KEYS)).eval() for t in ("diffusion", "dp3")]
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(1, 16, 3, generator=g) for _ in range(2)]
    t = [torch.full((1,), 37.0)] * 2
    c = [torch.randn(1, p.encoding_dim, generator=g) for p in pols]
    return [p.unet for p in pols], x, t, c


def _trace(unet, x, t, c):
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(unet, (x, t, c)))


class ForkSecond(torch.nn.Module):
    """``(x0, t0, c0, x1, t1, c1) -> (a(x0, t0, c0), b(x1, t1, c1))``: head ``b`` forked onto torch's inter-op pool,
    head ``a`` on the calling thread, then wait (the probes' per-step prototype; scripted, then frozen)."""

    def __init__(self, a, b):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x0, t0, c0, x1, t1, c1):
        fut = torch.jit.fork(self.b, x1, t1, c1)
        y0 = self.a(x0, t0, c0)
        return y0, torch.jit.wait(fut)


class _ForkBoth(torch.nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x0, t0, c0, x1, t1, c1, n: int):
        for _ in range(n):
            fut = torch.jit.fork(self.a, x0, t0, c0)
            self.b(x1, t1, c1)
            torch.jit.wait(fut)
        return x0


def _worker(i, inner, start, done, stop, out):
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    unets, x, t, c = _heads()
    f = _trace(unets[i], x[i], t[i], c[i])
    with torch.no_grad():
        for _ in range(20):
            f(x[i], t[i], c[i])
        while True:
            run = start.get()
            if run is None:
                return
            if run:
                t0 = time.perf_counter()
                for _ in range(inner):
                    f(x[i], t[i], c[i])
                done.put((t0, time.perf_counter()))
            else:
                done.put(None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--no-script", action="store_true", help="skip torch.jit.script")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(2)
    warnings.filterwarnings("ignore")
    print("load before", os.getloadavg(), "torch", torch.__version__)
    unets, x, t, c = _heads()
    a, b = unets
    tr = [_trace(u, x[i], t[i], c[i]) for i, u in enumerate(unets)]
    with torch.no_grad():
        ref = [u(x[i], t[i], c[i]) for i, u in enumerate(unets)]
        print("traced bit-identical:", [bool(torch.equal(tr[i](x[i], t[i], c[i]), ref[i])) for i in range(2)])
    sc = None
    if not args.no_script:
        try:
            sc = [torch.jit.freeze(torch.jit.script(u).eval()) for u in unets]
            with torch.no_grad():
                print("scripted bit-identical:", [bool(torch.equal(sc[i](x[i], t[i], c[i]), ref[i])) for i in range(2)])
        except Exception as exc:  # noqa: BLE001 - a probe: report and go on
            print("torch.jit.script failed:", type(exc).__name__, str(exc).splitlines()[0])
    both = torch.jit.script(_ForkBoth(torch.jit.trace(a, (x[0], t[0], c[0])), torch.jit.trace(b, (x[1], t[1], c[1]))))
    both = torch.jit.freeze(both.eval())

    ctx = mp.get_context("spawn")
    starts, done = [ctx.Queue() for _ in range(2)], ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, args.inner, starts[i], done, None, None)) for i in range(2)]
    for p in procs:
        p.start()

    n = args.inner
    pool = ThreadPoolExecutor(2)

    def block(f, i):
        with torch.no_grad():  # grad mode is per thread: pool threads need their own
            for _ in range(n):
                f(x[i], t[i], c[i])

    def threads(f, g):
        with torch.no_grad():
            fa, fb = pool.submit(block, f, 0), pool.submit(block, g, 1)
            fa.result()
            fb.result()

    def block_grad_on(f, i):  # what a pool thread does without its own torch.no_grad (the first probe)
        with torch.enable_grad():
            for _ in range(n):
                f(x[i], t[i], c[i])

    def threads_grad_on(f, g):
        fa, fb = pool.submit(block_grad_on, f, 0), pool.submit(block_grad_on, g, 1)
        fa.result()
        fb.result()

    def procs_case(both_run):
        starts[0].put(True)
        starts[1].put(both_run)
        got = [r for r in (done.get(), done.get()) if r is not None]
        return max(e for _, e in got) - min(s for s, _ in got)

    cases = {
        "eager one": lambda: block(a, 0),
        "eager two seq": lambda: (block(a, 0), block(b, 1)),
        "eager two threads": lambda: threads(a, b),
        "traced one": lambda: block(tr[0], 0),
        "traced two seq": lambda: (block(tr[0], 0), block(tr[1], 1)),
        "traced two threads": lambda: threads(tr[0], tr[1]),
        "traced two threads, grad on": lambda: threads_grad_on(tr[0], tr[1]),
        "traced fork/wait": lambda: both(x[0], t[0], c[0], x[1], t[1], c[1], n),
        "procs one (traced)": lambda: procs_case(False),
        "procs two (traced)": lambda: procs_case(True),
    }
    if sc is not None:
        cases.update({"scripted one": lambda: block(sc[0], 0),
                      "scripted two seq": lambda: (block(sc[0], 0), block(sc[1], 1)),
                      "scripted two threads": lambda: threads(sc[0], sc[1])})
    times = {k: [] for k in cases}
    with torch.no_grad():
        for _ in range(3):
            for f in cases.values():
                f()
        for r in range(args.reps):
            items = list(cases.items())
            for k, f in (items if r % 2 == 0 else items[::-1]):
                t0 = time.perf_counter()
                inside = f()
                wall = time.perf_counter() - t0
                times[k].append(inside if k.startswith("procs") else wall)
    for q in starts:
        q.put(None)
    for p in procs:
        p.join(timeout=10)

    def med(k):
        return statistics.median(times[k])

    print("load after", os.getloadavg())
    print(f"{'case':24s} {'ms/step':>8s}  x eager one  x traced one")
    for k in cases:
        base = "procs one (traced)" if k.startswith("procs") else "traced one"
        extra = f"   (x procs one {med(k) / med(base):.2f})" if k.startswith("procs") else ""
        print(f"{k:24s} {med(k) * 1e3 / n:8.3f}  {med(k) / med('eager one'):10.2f}  "
              f"{med(k) / med('traced one'):11.2f}{extra}")

    def spin(dur):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < dur:
            count += 1
        return count

    with torch.no_grad():
        alone = spin(0.5)
        for name, f in (("traced", tr[0]), ("eager", a)):
            stop = threading.Event()

            def bg(f=f, stop=stop):
                with torch.no_grad():
                    while not stop.is_set():
                        f(x[0], t[0], c[0])

            th = threading.Thread(target=bg)
            th.start()
            count = spin(0.5)
            stop.set()
            th.join()
            print(f"python counter beside {name} forwards on another thread: {count / alone:.2f} of alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
