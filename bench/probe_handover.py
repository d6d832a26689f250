"""The per-step handover of a K = 2 joint step: what does handing head 2 to another worker and getting it back cost?

Issue #12. ``bench/probe_parallel_ceiling.py`` showed two heads side by side with NO synchronisation slow each other
only 1.00-1.08x, while a loop of "head 1 inline, head 2 forked, wait" costs ~1.29x one head
(``bench/probe_forked_step.py``): the loss is in the handover at every denoising step. This probe measures it for
three mechanisms, all cases interleaved round by round (order reversed every other round), median over ``--rounds``:

* ``fork``: ``torch.jit.fork`` / ``torch.jit.wait`` inside one scripted call (torch's inter-op pool, as
  :class:`~gpc_ros.policies.adapter.JointHeadsStep` does);
* ``thread event`` / ``thread queue``: a Python thread of this process woken by a ``threading.Event`` (and answering
  with one), or fed by a ``queue.Queue`` (and answering through another); ``thread event, pinned``: the Event thread
  pinned to CPU 1 and the caller to CPU 0 (as in the process cases: each head stays on its own core);
* ``process spin``: a separate process (spawn, pinned to CPU 1) that busy-polls a sequence number in shared memory
  (``multiprocessing.shared_memory``; the inputs and the result in the same block) for up to ``--spin-ms`` after
  its last job, then sleeps in ``--sleep-us`` steps; the caller (pinned to CPU 0 in these cases) busy-polls the
  answer's sequence number.

Two kinds of job:

* ``trivial``: ``y = x + 1`` on a (1, 16, 3) tensor, round trip in microseconds (a block of ``--trivial`` round
  trips), against ``inline`` (the same job on the caller, no handover);
* ``heads``: 10 denoising steps, each step head 1 (RGB) on the caller and head 2 (DP3) on the worker on the same
  x_t, then ``x_t <- x_t - 1e-3 (y1 + y2)``, against ``one head`` (10 steps of head 1 alone,
  ``x_t <- x_t - 1e-3 y1``) and ``two heads sequential`` (both on the caller). The parents are ``bench_graph``'s
  ``small`` RGB diffusion and DP3 checkpoints loaded as hosts load them, heads traced and frozen as
  ``probe_forked_step`` / ``probe_parallel_ceiling`` trace them (1 intra-op torch thread, 2 inter-op threads); the
  worker process loads its own DP3 parent from the same checkpoint. Each head case is a block of ``--chunks`` x 10
  steps (ms per 10 steps). The caller is pinned to CPU 0 in the process cases and in ``one head, pinned``;
  unpinned otherwise.

The first process round trip of each block is untimed (the worker may be asleep); the worker is told to stop
spinning at the end of each process block, so it does not take CPU 1 from the next case. Each K = 2 mechanism's
result is checked against the sequential one (``torch.equal``). Prints the load average before and after. Run:
``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_handover.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import tempfile
import threading
import time
import warnings
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(2)

from bench_graph import fill, write_checkpoints  # noqa: E402  (bench/, next to this script)
from probe_traced_overlap import ForkSecond  # noqa: E402  (bench/, next to this script)

from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402

SHAPE = (1, 16, 3)
N = 16 * 3
STEPS = 10
# shared block: int64 flags [REQ, DONE, JOB, QUIT, SPIN, HEAD_NS, HEAD_N] then float32 x and out
REQ, DONE, JOB, QUIT, SPIN, HEAD_NS, HEAD_N = range(7)
TRIVIAL, HEAD = 0, 1
X_OFF, OUT_OFF = 64, 64 + 4 * N


def _parent(name: str, checkpoint: str, t_obs: float):
    """A parent loaded as hosts load it and its observation (probe_parallel_ceiling's ``_parent``)."""
    parent, observing = load_host_parent(HostConfig(name=name, checkpoint=checkpoint, trace_head=True))
    parent._denoiser.background = False
    core = HostCore(parent, observing)
    fill(core, t_obs)
    return parent, core.window.at(t_obs)[0]


def _views(buf):
    flags = np.ndarray((8,), dtype=np.int64, buffer=buf, offset=0)
    x = torch.from_numpy(np.ndarray((N,), dtype=np.float32, buffer=buf, offset=X_OFF)).view(SHAPE)
    out = torch.from_numpy(np.ndarray((N,), dtype=np.float32, buffer=buf, offset=OUT_OFF)).view(SHAPE)
    return flags, x, out


def _traced_head(parent, obs):
    """(traced and frozen head, its encoding, t) as in probe_forked_step / probe_parallel_ceiling."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*SHAPE, generator=g)
    t = torch.full((1,), 37.0)
    with torch.no_grad():
        enc = parent.encode(obs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = torch.jit.freeze(torch.jit.trace(parent._denoiser.module, (x, t, enc)).eval(), optimize_numerics=False)
    return head, enc, t


def _process_worker(shm_name, name, checkpoint, t_obs, cpu, spin_s, sleep_s, ready) -> None:
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    parent, obs = _parent(name, checkpoint, t_obs)
    head, enc, t = _traced_head(parent, obs)
    shm = shared_memory.SharedMemory(name=shm_name)
    flags, x, out = _views(shm.buf)
    with torch.no_grad():
        for _ in range(5):
            head(x.clone(), t, enc)
    ready.set()
    last = int(flags[REQ])
    t_last = time.perf_counter()
    clock = time.perf_counter
    with torch.no_grad():
        while True:
            r = int(flags[REQ])
            if r != last:
                if flags[JOB] == TRIVIAL:
                    out.copy_(x + 1)
                else:
                    t0 = time.perf_counter_ns()
                    out.copy_(head(x.clone(), t, enc))
                    flags[HEAD_NS] += time.perf_counter_ns() - t0
                    flags[HEAD_N] += 1
                flags[DONE] = r
                last = r
                t_last = clock()
                continue
            if flags[QUIT]:
                break
            if flags[SPIN] and clock() - t_last < spin_s:
                continue
            time.sleep(sleep_s)
    del flags, x, out
    shm.close()


class ProcessWorker:
    """Caller side of the spinning process: ``call(job, x)`` -> its result (a copy)."""

    def __init__(self, flags, x, out) -> None:
        self.flags, self.x, self.out = flags, x, out
        self.seq = int(flags[REQ])

    def post(self, job: int, x: torch.Tensor) -> None:
        self.flags[JOB] = job
        self.x.copy_(x)
        self.seq += 1
        self.flags[REQ] = self.seq  # x86: stores are seen in order, so x is written before REQ is seen

    def result(self) -> torch.Tensor:
        flags, seq = self.flags, self.seq
        while flags[DONE] != seq:
            pass
        return self.out.clone()

    def call(self, job: int, x: torch.Tensor) -> torch.Tensor:
        self.post(job, x)
        return self.result()


class EventWorker(threading.Thread):
    """A thread woken by an Event, answering through another Event."""

    def __init__(self, jobs, cpu: int | None = None) -> None:
        super().__init__(daemon=True)
        self.jobs, self.req, self.done, self.cpu = jobs, threading.Event(), threading.Event(), cpu
        self.job, self.x, self.y, self.quit = TRIVIAL, None, None, False
        self.head_s, self.head_n = 0.0, 0

    def run(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only
        with torch.no_grad():
            while True:
                self.req.wait()
                self.req.clear()
                if self.quit:
                    return
                t0 = time.perf_counter()
                self.y = self.jobs[self.job](self.x)
                if self.job == HEAD:
                    self.head_s += time.perf_counter() - t0
                    self.head_n += 1
                self.done.set()

    def post(self, job, x) -> None:
        self.job, self.x = job, x
        self.done.clear()
        self.req.set()

    def result(self):
        self.done.wait()
        return self.y


class QueueWorker(threading.Thread):
    """A thread fed by a Queue, answering through another Queue."""

    def __init__(self, jobs) -> None:
        super().__init__(daemon=True)
        self.jobs, self.inq, self.outq = jobs, queue.SimpleQueue(), queue.SimpleQueue()
        self.head_s, self.head_n = 0.0, 0

    def run(self) -> None:
        with torch.no_grad():
            while True:
                item = self.inq.get()
                if item is None:
                    return
                job, x = item
                t0 = time.perf_counter()
                y = self.jobs[job](x)
                if job == HEAD:
                    self.head_s += time.perf_counter() - t0
                    self.head_n += 1
                self.outq.put(y)

    def post(self, job, x) -> None:
        self.inq.put((job, x))

    def result(self):
        return self.outq.get()


@torch.jit.script
def _tiny(x: torch.Tensor) -> torch.Tensor:
    return x + 1


@torch.jit.script
def _fork_tiny(x: torch.Tensor) -> torch.Tensor:
    fut = torch.jit.fork(_tiny, x)
    return torch.jit.wait(fut)


def _pin(cpus) -> None:
    os.sched_setaffinity(0, set(cpus))  # pid 0: the calling (main) thread only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--trivial", type=int, default=200, help="round trips per timed trivial block")
    ap.add_argument("--chunks", type=int, default=2, help="10-step loops per timed head block")
    ap.add_argument("--spin-ms", type=float, default=20.0, help="process worker: spin this long after a job")
    ap.add_argument("--sleep-us", type=float, default=200.0, help="process worker: then sleep in these steps")
    args = ap.parse_args()
    load0 = os.getloadavg()
    print(f"load before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; torch {torch.__version__}, intra-op threads "
          f"{torch.get_num_threads()}, interop threads {torch.get_num_interop_threads()}; {os.cpu_count()} CPUs; "
          f"affinity {sorted(os.sched_getaffinity(0))}; process worker spins {args.spin_ms} ms then sleeps "
          f"{args.sleep_us} us steps")
    all_cpus = sorted(os.sched_getaffinity(0))
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-handover-")))
    t_obs = time.time()

    shm = shared_memory.SharedMemory(create=True, size=4096)
    flags, sx, sout = _views(shm.buf)
    flags[:] = 0
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_process_worker, args=(shm.name, "pcd", checkpoints["pcd"], t_obs, 1,
                                                     args.spin_ms * 1e-3, args.sleep_us * 1e-6, ready), daemon=True)
    proc.start()

    parents, obs = {}, {}
    for n in ("rgb", "pcd"):
        parents[n], obs[n] = _parent(n, checkpoints[n], t_obs)
    h1, enc1, t = _traced_head(parents["rgb"], obs["rgb"])
    h2, enc2, _ = _traced_head(parents["pcd"], obs["pcd"])
    x0 = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = [torch.jit.trace(parents[n]._denoiser.module, (x0, t, e)) for n, e in (("rgb", enc1), ("pcd", enc2))]
        fused = torch.jit.freeze(torch.jit.script(ForkSecond(*raw)).eval(), optimize_numerics=False)

    jobs = {TRIVIAL: lambda x: x + 1, HEAD: lambda x: h2(x, t, enc2)}
    ev, qu, evp = EventWorker(jobs), QueueWorker(jobs), EventWorker(jobs, cpu=1)
    evp.start()
    ev.start()
    qu.start()
    pw = ProcessWorker(flags, sx, sout)
    flags[SPIN] = 1

    # ---- the jobs -------------------------------------------------------------------------------------------
    def trivial_inline():
        x = x0
        for _ in range(args.trivial):
            x = x + 1
        return x

    def trivial_fork():
        x = x0
        for _ in range(args.trivial):
            x = _fork_tiny(x)
        return x

    def trivial_worker(w):
        def run():
            x = x0
            for _ in range(args.trivial):
                w.post(TRIVIAL, x)
                x = w.result()
            return x
        return run

    def one_head():
        with torch.no_grad():
            x = x0
            for _ in range(STEPS):
                x = x - 1e-3 * h1(x, t, enc1)
            return x

    def two_sequential():
        with torch.no_grad():
            x = x0
            for _ in range(STEPS):
                y1 = h1(x, t, enc1)
                y2 = h2(x, t, enc2)
                x = x - 1e-3 * (y1 + y2)
            return x

    def two_fork():
        with torch.no_grad():
            x = x0
            for _ in range(STEPS):
                y1, y2 = fused(x, t, enc1, x, t, enc2)
                x = x - 1e-3 * (y1 + y2)
            return x

    split = {}  # worker -> [caller's head 1 s, caller's wait for head 2 s, steps]

    def two_worker(w):
        acc = split.setdefault(id(w), [0.0, 0.0, 0])
        clock = time.perf_counter

        def run():
            with torch.no_grad():
                x = x0
                for _ in range(STEPS):
                    w.post(HEAD, x)
                    t0 = clock()
                    y1 = h1(x, t, enc1)
                    t1 = clock()
                    y2 = w.result()
                    acc[0] += t1 - t0
                    acc[1] += clock() - t1
                    acc[2] += 1
                    x = x - 1e-3 * (y1 + y2)
                return x
        return run

    def timed(f, k, cpus, process=False):
        def run():
            _pin(cpus)
            if process:
                flags[SPIN] = 1
                pw.call(TRIVIAL, x0)  # untimed: wakes the worker if it slept
            try:
                t0 = time.perf_counter()
                for _ in range(k):
                    f()
                return (time.perf_counter() - t0) / k
            finally:
                if process:
                    flags[SPIN] = 0
        return run

    cpu0 = [0]
    cases = {
        "trivial: inline (no handover)": (timed(trivial_inline, 1, all_cpus), args.trivial),
        "trivial: fork": (timed(trivial_fork, 1, all_cpus), args.trivial),
        "trivial: thread event": (timed(trivial_worker(ev), 1, all_cpus), args.trivial),
        "trivial: thread queue": (timed(trivial_worker(qu), 1, all_cpus), args.trivial),
        "trivial: thread event, pinned": (timed(trivial_worker(evp), 1, cpu0), args.trivial),
        "trivial: process spin": (timed(trivial_worker(pw), 1, cpu0, True), args.trivial),
        "heads: one head": (timed(one_head, args.chunks, all_cpus), 1),
        "heads: one head, pinned": (timed(one_head, args.chunks, cpu0), 1),
        "heads: two sequential": (timed(two_sequential, args.chunks, all_cpus), 1),
        "heads: two, fork": (timed(two_fork, args.chunks, all_cpus), 1),
        "heads: two, thread event": (timed(two_worker(ev), args.chunks, all_cpus), 1),
        "heads: two, thread queue": (timed(two_worker(qu), args.chunks, all_cpus), 1),
        "heads: two, thread event, pinned": (timed(two_worker(evp), args.chunks, cpu0), 1),
        "heads: two, process spin": (timed(two_worker(pw), args.chunks, cpu0, True), 1),
    }

    ready.wait()
    # checks (and warm-up, unpinned so torch's inter-op pool threads are not bound to CPU 0)
    ref = two_sequential()
    checks = {"fork": two_fork(), "thread event": two_worker(ev)(), "thread queue": two_worker(qu)(),
              "thread event, pinned": two_worker(evp)()}
    flags[SPIN] = 1
    checks["process spin"] = two_worker(pw)()
    flags[SPIN] = 0
    print("two-head loop torch.equal to sequential:", {k: torch.equal(v, ref) for k, v in checks.items()})
    print("trivial torch.equal to inline:",
          {k: torch.equal(f(), trivial_inline()) for k, f in (("fork", trivial_fork), ("thread event",
                                                                                       trivial_worker(ev)),
                                                              ("thread queue", trivial_worker(qu)))})
    for f, _ in cases.values():
        f()
    _pin(all_cpus)

    t_start = time.perf_counter()
    times = {k: [] for k in cases}
    for r in range(args.rounds):
        items = list(cases.items())
        for k, (f, per) in (items if r % 2 == 0 else items[::-1]):
            times[k].append(f() / per)
        _pin(all_cpus)
    load1 = os.getloadavg()
    worker_head = {"thread event": ev.head_s / max(ev.head_n, 1), "thread queue": qu.head_s / max(qu.head_n, 1),
                   "thread event, pinned": evp.head_s / max(evp.head_n, 1),
                   "process spin": flags[HEAD_NS] * 1e-9 / max(int(flags[HEAD_N]), 1)}
    flags[QUIT] = 1
    proc.join(timeout=10)
    for w in (ev, evp):
        w.quit = True
        w.req.set()
    qu.inq.put(None)
    pw_id = id(pw)
    flags = sx = sout = pw = None  # drop the views into the block before closing it
    shm.close()
    shm.unlink()

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"load after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; median of {args.rounds} interleaved rounds "
          f"({time.perf_counter() - t_start:.0f} s); trivial blocks of {args.trivial} round trips, head blocks of "
          f"{args.chunks} x {STEPS} steps")
    print(f"{'case':34s} {'us/trip':>8s} {'- inline':>9s}")
    for k, v in med.items():
        if k.startswith("trivial"):
            print(f"{k:34s} {v * 1e6:8.1f} {(v - med['trivial: inline (no handover)']) * 1e6:9.1f}")
    print(f"{'case':34s} {'ms/10 steps':>11s} {'x one head':>11s} {'per-step extra ms':>18s}   reference")
    for k, v in med.items():
        if k.startswith("heads"):
            ref_k = "heads: one head, pinned" if "process" in k or "pinned" in k else "heads: one head"
            if k == "heads: two, thread event, pinned":
                ref_k = "heads: one head, pinned"
            print(f"{k:34s} {v * 1e3:11.3f} {v / med[ref_k]:10.3f}x {(v - med[ref_k]) * 1e3 / STEPS:18.3f}   "
                  f"{ref_k}")
    q = {k: (statistics.quantiles(v, n=4)[0] * 1e3, statistics.quantiles(v, n=4)[2] * 1e3)
         for k, v in times.items() if k.startswith("heads")}
    print("two-head loops, mean over all steps run (incl. warm-up): caller's head 1 / caller's wait for head 2 "
          "after head 1 / the worker's head 2 call (ms):")
    for name, w in (("thread event", ev), ("thread queue", qu), ("thread event, pinned", evp),
                    ("process spin", None)):
        a = split[id(w) if w is not None else pw_id]
        print(f"  {name:20s} head 1 {a[0] / a[2] * 1e3:.3f}, wait {a[1] / a[2] * 1e3:.3f}, worker head 2 "
              f"{worker_head[name] * 1e3:.3f}")
    print("heads quartiles (ms/10 steps): " + "; ".join(f"{k[7:]} {a:.2f}-{b:.2f}" for k, (a, b) in q.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
