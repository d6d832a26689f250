"""The hardware ceiling for K = 2 on this machine: how much slower is a head (a chunk) while an independent worker
runs the other parent's head (chunks) the whole time, with no synchronisation at all?

Issue #12: the goal is K = 2 at <= 1.15x one parent. If two fully independent workers, each on its own core,
already take >= ~1.15x the time per call of one worker alone, no composer change can reach the goal with K = 2 on
these 2 cores. Same parents as ``bench/probe_forked_step.py`` (``bench_graph``'s ``small`` RGB diffusion and DP3
checkpoints loaded as hosts load them, heads traced and frozen as that probe traces them, 1 intra-op torch thread,
2 inter-op threads). Cases interleaved round by round (order reversed every other round), median over ``--rounds``;
a head case times a block of ``--inner`` calls (ms per call), a chunk case ``--chunks`` chunks (ms per chunk):

* ``head X alone, pinned``: X's traced head in a loop, the measuring thread pinned to CPU 0
  (``os.sched_setaffinity``), nothing else of the probe running; ``unpinned``: the same on both CPUs;
* ``head X | process Y head``: the same loop (pinned to CPU 0) while a SECOND PROCESS (multiprocessing spawn, its
  own parent loaded from the same checkpoint, its own traced head, pinned to CPU 1) calls Y's head in a tight loop
  the whole time; the worker is woken before the block and has finished >= 2 calls before timing starts, and is
  stopped (and seen idle) after it;
* ``head X | thread Y head``: the same with the background worker a thread of this process (traced calls release
  the GIL), both unpinned;
* ``chunk X alone, pinned`` / ``chunk X | process Y chunks``: the one-parent Composer chunk (encode + DDIM 10,
  ``probe_forked_step``'s ``one traced``) alone vs while the other process makes Y's one-parent chunks in a loop;
* reference, unpinned: ``one traced`` (the RGB one-parent chunk) and ``K=2 joint encode + joint step (built)``.

The background worker's own ms per call while it ran concurrently is printed too. Prints the load average before and
after and the CPU topology the guest sees. Run:
``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_parallel_ceiling.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(2)

from bench_graph import fill, write_checkpoints  # noqa: E402  (bench/, next to this script)

from gpc_ros.compose import Composer, ComposerConfig  # noqa: E402
from gpc_ros.compose.sampler import SamplerConfig  # noqa: E402
from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402

NAMES = ("rgb", "pcd")
LABEL = {"rgb": "RGB", "pcd": "DP3"}
SEQ = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
W1 = torch.tensor([1.0], dtype=torch.float64)
W2 = torch.tensor([0.5, 0.5], dtype=torch.float64)
IDLE, HEAD, CHUNK, QUIT = 0, 1, 2, -1


def _parent(name: str, checkpoint: str, t_obs: float):
    parent, observing = load_host_parent(HostConfig(name=name, checkpoint=checkpoint, trace_head=True))
    parent._denoiser.background = False
    core = HostCore(parent, observing)
    fill(core, t_obs)
    return parent, core.window.at(t_obs)[0]


def _jobs(parent, obs):
    """(head loop body, chunk body) for one parent: its head traced and frozen as in probe_forked_step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, generator=g)
    t = torch.full((1,), 37.0)
    with torch.no_grad():
        enc = parent.encode(obs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = torch.jit.freeze(torch.jit.trace(parent._denoiser.module, (x, t, enc)).eval(), optimize_numerics=False)
    one = Composer([parent], SEQ)

    def head_call():
        with torch.no_grad():
            head(x, t, enc)

    def chunk_call():
        one.compose(one.encode([obs]), W1, generator=0)

    return head_call, chunk_call


def _loop(jobs, mode, go, busy, calls, stats) -> None:
    """Background worker body (process or thread): while ``go`` is set, run ``jobs[mode]`` back to back."""
    while True:
        go.wait()
        m = mode.value
        if m == QUIT:
            return
        busy.value = 1
        f = jobs[m]
        n, t0 = 0, time.perf_counter()
        while go.is_set():
            f()
            n += 1
            calls.value += 1
        stats[2 * (m - 1)] += time.perf_counter() - t0
        stats[2 * (m - 1) + 1] += n
        busy.value = 0


def _process_worker(name, checkpoint, t_obs, cpu, mode, go, busy, calls, stats, ready) -> None:
    os.sched_setaffinity(0, {cpu})
    parent, obs = _parent(name, checkpoint, t_obs)
    head_call, chunk_call = _jobs(parent, obs)
    for _ in range(5):
        head_call()
        chunk_call()
    ready.set()
    _loop({HEAD: head_call, CHUNK: chunk_call}, mode, go, busy, calls, stats)


class _Slot:
    """Thread-side stand-ins for the shared values of a process worker."""

    def __init__(self, value=0):
        self.value = value


class Background:
    """Control of one background worker: ``run(mode)`` wakes it and returns once it has done >= 2 calls."""

    def __init__(self, kind, mode, go, busy, calls, stats) -> None:
        self.kind, self.mode, self.go, self.busy, self.calls, self.stats = kind, mode, go, busy, calls, stats

    def start(self, m: int) -> None:
        self.mode.value = m
        c0 = self.calls.value
        self.go.set()
        while self.busy.value != 1 or self.calls.value < c0 + 2:
            time.sleep(0.0005)

    def stop(self) -> None:
        self.go.clear()
        while self.busy.value != 0:
            time.sleep(0.0005)

    def per_call_ms(self, m: int) -> float:
        s, n = self.stats[2 * (m - 1)], self.stats[2 * (m - 1) + 1]
        return s / n * 1e3 if n else float("nan")


def _pin(cpus) -> None:
    os.sched_setaffinity(0, set(cpus))  # pid 0: the calling (main) thread only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--inner", type=int, default=10, help="head calls per timed block")
    ap.add_argument("--chunks", type=int, default=1, help="chunks per timed block")
    args = ap.parse_args()
    load0 = os.getloadavg()
    siblings = [Path(f"/sys/devices/system/cpu/cpu{i}/topology/thread_siblings_list").read_text().strip()
                for i in range(os.cpu_count())]
    print(f"load before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; torch {torch.__version__}, intra-op threads "
          f"{torch.get_num_threads()}, interop threads {torch.get_num_interop_threads()}; {os.cpu_count()} CPUs, "
          f"thread siblings (guest view) {siblings}; affinity {sorted(os.sched_getaffinity(0))}")
    all_cpus = sorted(os.sched_getaffinity(0))
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-ceiling-")))
    t_obs = time.time()

    ctx = mp.get_context("spawn")
    procs, bg_proc = [], {}
    for n in NAMES:
        mode, busy, calls = ctx.Value("i", IDLE, lock=False), ctx.Value("i", 0, lock=False), ctx.Value("q", 0,
                                                                                                       lock=False)
        stats, go, ready = ctx.Array("d", 4, lock=False), ctx.Event(), ctx.Event()
        p = ctx.Process(target=_process_worker, args=(n, checkpoints[n], t_obs, 1, mode, go, busy, calls, stats,
                                                      ready), daemon=True)
        p.start()
        procs.append((p, ready))
        bg_proc[n] = Background("process", mode, go, busy, calls, stats)

    parents, obs = {}, {}
    for n in NAMES:
        parents[n], obs[n] = _parent(n, checkpoints[n], t_obs)
    jobs = {n: _jobs(parents[n], obs[n]) for n in NAMES}
    one = Composer([parents["rgb"]], SEQ)
    joint = Composer([parents["rgb"], parents["pcd"]], replace(SEQ, joint_step=True, joint_encode=True))
    joint._joint.head.background = False
    ref_one = lambda: one.compose(one.encode([obs["rgb"]]), W1, generator=0)  # noqa: E731
    ref_joint = lambda: joint.compose(joint.encode([obs["rgb"], obs["pcd"]]), W2, generator=0)  # noqa: E731
    # warm up (and create torch's inter-op pool) unpinned, so pool threads are not bound to CPU 0
    for _ in range(3):
        ref_one()
        ref_joint()
        for h, c in jobs.values():
            h()
            c()

    bg_thread, threads = {}, []
    for n in NAMES:
        go, busy, calls, mode, stats = threading.Event(), _Slot(), _Slot(), _Slot(), [0.0] * 4
        th = threading.Thread(target=_loop, args=({HEAD: jobs[n][0], CHUNK: jobs[n][1]}, mode, go, busy, calls,
                                                  stats), daemon=True)
        th.start()
        threads.append(th)
        bg_thread[n] = Background("thread", mode, go, busy, calls, stats)
    for p, ready in procs:
        ready.wait()

    def block(f, k):
        def run():
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            return (time.perf_counter() - t0) / k
        return run

    def case(f, k, cpus, bg=None, m=IDLE):
        run = block(f, k)

        def timed():
            _pin(cpus)
            if bg is not None:
                bg.start(m)
            try:
                return run()
            finally:
                if bg is not None:
                    bg.stop()
        return timed

    other = {"rgb": "pcd", "pcd": "rgb"}
    cases = {}
    for n in NAMES:
        head = jobs[n][0]
        cases[f"head {LABEL[n]} alone, pinned"] = case(head, args.inner, [0])
        cases[f"head {LABEL[n]} alone, unpinned"] = case(head, args.inner, all_cpus)
        cases[f"head {LABEL[n]} | process {LABEL[other[n]]} head"] = case(head, args.inner, [0], bg_proc[other[n]],
                                                                            HEAD)
        cases[f"head {LABEL[n]} | thread {LABEL[other[n]]} head"] = case(head, args.inner, all_cpus,
                                                                          bg_thread[other[n]], HEAD)
    for n in NAMES:
        chunk = jobs[n][1]
        cases[f"chunk {LABEL[n]} alone, pinned"] = case(chunk, args.chunks, [0])
        cases[f"chunk {LABEL[n]} | process {LABEL[other[n]]} chunks"] = case(chunk, args.chunks, [0],
                                                                               bg_proc[other[n]], CHUNK)
    cases["one traced (unpinned)"] = case(ref_one, args.chunks, all_cpus)
    cases["K=2 joint encode + joint step (built)"] = case(ref_joint, args.chunks, all_cpus)

    t_start = time.perf_counter()
    times = {k: [] for k in cases}
    for f in cases.values():
        f()
    for r in range(args.rounds):
        items = list(cases.items())
        for k, f in (items if r % 2 == 0 else items[::-1]):
            times[k].append(f())
    _pin(all_cpus)
    load1 = os.getloadavg()
    for bg in list(bg_proc.values()) + list(bg_thread.values()):
        bg.mode.value = QUIT
        bg.go.set()
    for p, _ in procs:
        p.join(timeout=10)
    for th in threads:
        th.join(timeout=10)

    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"load after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; median of {args.rounds} interleaved rounds "
          f"({time.perf_counter() - t_start:.0f} s); head blocks of {args.inner} calls, chunk blocks of "
          f"{args.chunks}")
    print(f"{'case':44s} {'ms/call':>8s} {'x alone':>8s}   reference")
    for k, v in med.items():
        if k.startswith("head"):
            n = k.split()[1]
            ref = f"head {n} alone, pinned" if "process" in k else f"head {n} alone, unpinned"
        elif k.startswith("chunk"):
            ref = f"chunk {k.split()[1]} alone, pinned"
        else:
            ref = "one traced (unpinned)"
        print(f"{k:44s} {v:8.3f} {v / med[ref]:7.2f}x   {ref}")
    print("background workers while concurrent (ms per call, mean over all their running time):")
    for n in NAMES:
        for kind, bg in (("process", bg_proc[n]), ("thread", bg_thread[n])):
            ms = [f"{what} {bg.per_call_ms(m):.3f}" for what, m in (("head", HEAD), ("chunk", CHUNK))
                  if bg.stats[2 * (m - 1) + 1]]
            print(f"  {kind} {LABEL[n]}: {', '.join(ms)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
