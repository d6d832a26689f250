"""Why the spinning worker's head is slower than the same head in process, and where a K = 2 step's handover goes
(session 17, docs/graph.md).

The bench_graph parents (``small`` RGB diffusion + DP3, random weights, DDIM 10, one candidate), the plain Composer
with ``joint_step_workers`` (joint encode + joint step, head 2 in a spinning worker). The worker runs an
instrumented copy of the package's worker loop that stamps, per step, when it saw the request, started and ended its
head and answered (``time.perf_counter_ns``: CLOCK_MONOTONIC, the same clock in both processes); the caller's
``SpinningHeadsStep.__call__`` is an instrumented copy of the package's that stamps the post, head 1 and the answer.
The worker also reports its torch settings. Variants, interleaved chunk by chunk:

* ``conc``: as the package runs it (post, head 1, wait for the worker);
* ``serial``: post, wait for the worker's answer, then head 1: each head timed with the other core idle;
* the same two with the parents swapped (``pcd`` first: the RGB head in the worker, the DP3 head in process).

Every chunk is checked ``torch.equal`` to the eager sequential Composer's.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/probe_worker_head.py [--rounds N]`` (under the CPU lock).
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

from gpc_ros.policies import spin_worker  # noqa: E402
from gpc_ros.policies.spin_worker import (  # noqa: E402  # noqa: E402
    _DTYPES,
    CTRL,
    CTRL_DONE,
    DONE,
    DTYPE,
    E_DIMS,
    E_NDIM,
    ERR,
    HEAD_N,
    HEAD_NS,
    HEADER_SLOTS,
    QUIT,
    READY,
    REQ,
    REST,
    SIG,
    SLEEPING,
    TRACED_N,
    _views,
)

SEEN, HSTART, HEND, DONE_T = 25, 26, 27, 28
MODE = {"serial": False, "worker_input": "clone"}


def settings() -> str:
    return (f"threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}, "
            f"profiling executor {torch._C._jit_set_profiling_executor(True)}, "
            f"profiling mode {torch._C._get_graph_executor_optimize()}, "
            f"num profiled runs {torch._C._jit_get_num_profiled_runs()}, "
            f"affinity {sorted(os.sched_getaffinity(0))}, "
            f"MALLOC_ARENA_MAX {os.environ.get('MALLOC_ARENA_MAX')}, "
            f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY')}")


def diag_worker_main(shm_name, module_name, module_size, cpu, conn, wake, spin_s, idle_wait_s, max_traces,
                     parent_pid, input_mode="clone"):
    """A copy of spin_worker._worker_main with the timestamps (and its settings printed)."""
    import io
    from multiprocessing import shared_memory

    from gpc_ros.policies.traced import TracedHead

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    module_shm = shared_memory.SharedMemory(name=module_name)
    try:
        module = torch.load(io.BytesIO(bytes(module_shm.buf[:module_size])), weights_only=False).eval()
    finally:
        module_shm.close()
    head = TracedHead(module, max_traces=max_traces, background=True, check_every_call=False)
    print(f"  worker pid {os.getpid()}: {settings()}", flush=True)
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        diag_serve(shm.buf, head, module, conn, wake, spin_s, idle_wait_s, parent_pid, input_mode)
    finally:
        shm.close()
    head.wait_for_traces(5.0)
    os._exit(0)


def diag_serve(buf, head, module, conn, wake, spin_s, idle_wait_s, parent_pid, input_mode):
    import io

    import numpy as np

    flags = np.ndarray((HEADER_SLOTS,), dtype=np.int64, buffer=buf)
    flags[READY] = 1
    last, ctrl_seen = int(flags[REQ]), int(flags[CTRL])
    enc = None
    v = ()
    sig = -1
    clock = time.perf_counter
    ns = time.perf_counter_ns
    t_last = -1e9
    private: dict = {}
    with torch.no_grad():
        while True:
            r = int(flags[REQ])
            if r != last:
                seen = ns()
                last = r
                try:
                    if flags[SIG] != sig:
                        sig = int(flags[SIG])
                        key = tuple(flags[DTYPE:E_DIMS + int(flags[E_NDIM])].tolist())
                        v = _views(buf, tuple(key[1:4]), tuple(key[5:]), _DTYPES[key[0]])
                        private.clear()
                    if input_mode == "clone":  # the package before session 17: fresh copies, a time tensor built
                        enc = v[1].clone()
                        x = v[0].clone()
                        t = torch.full((x.shape[0],), float(v[3][0]), dtype=x.dtype)
                    elif input_mode == "view":  # the package since session 17
                        x, t, enc = v[0], v[3], v[1]
                    else:  # copied into private tensors kept across steps
                        if not private:
                            private.update(x=v[0].clone(), t=v[3].clone(), enc=v[1].clone())
                        else:
                            private["x"].copy_(v[0])
                            private["t"].copy_(v[3])
                            private["enc"].copy_(v[1])
                        x, t, enc = private["x"], private["t"], private["enc"]
                    start = ns()
                    y = head(x, t, enc)
                    end = ns()
                    v[2].copy_(y)
                    flags[HEAD_NS] += end - start
                    flags[HEAD_N] += 1
                    flags[TRACED_N] = head.calls_traced
                    flags[SEEN], flags[HSTART], flags[HEND] = seen, start, end
                except Exception:
                    flags[ERR] = r
                flags[DONE_T] = ns()
                flags[DONE] = r
                t_last = clock()
                continue
            if int(flags[CTRL]) != ctrl_seen:
                ctrl_seen = int(flags[CTRL])
                if conn.poll(idle_wait_s * 10):
                    state = torch.load(io.BytesIO(conn.recv_bytes()), weights_only=False)
                    module.load_state_dict(state)
                    head.check_weights()
                flags[CTRL_DONE] = ctrl_seen
                continue
            if flags[QUIT]:
                return
            if clock() - t_last < spin_s and not flags[REST]:
                continue
            flags[SLEEPING] = 1
            if int(flags[REQ]) == last and int(flags[CTRL]) == ctrl_seen and not flags[QUIT]:
                woken = wake.acquire(timeout=idle_wait_s)
                if woken:
                    t_last = clock()
                elif os.getppid() != parent_pid:
                    return
            flags[SLEEPING] = 0


ACC: collections.Counter = collections.Counter()


def diag_call(self, requests):
    """A copy of SpinningHeadsStep.__call__ (one worker) with timestamps; ``MODE['serial']``: the worker's head first
    (waited for), then head 1."""
    ns = time.perf_counter_ns
    with torch.no_grad():
        w = self.workers[0]
        x, t, enc = self.parents[1]._denoiser_inputs(*requests[1])
        t0 = ns()
        ok = w.ready and w.post(x, t, enc)
        assert ok
        t_post = ns()
        inputs = [self.parents[0]._denoiser_inputs(*requests[0])]
        if MODE["serial"]:
            out2 = w.result(10.0)
            t_seen = ns()
            h1s = ns()
            out1 = self.head(*inputs[0])
            h1e = ns()
            t_seen = ns()  # the clone below is timed alone
        else:
            h1s = ns()
            out1 = self.head(*inputs[0])
            h1e = ns()
            flags, seq = w.flags, w.seq
            while flags[DONE] != seq:
                pass
            t_seen = ns()
            out2 = w.out.clone()
        t_clone = ns() if not MODE["serial"] else t_seen
        f = w.flags
        ACC["post"] += t_post - t0
        ACC["post end -> worker saw it"] += int(f[SEEN]) - t_post
        ACC["worker: seen -> head start (key, clone x, time)"] += int(f[HSTART]) - int(f[SEEN])
        ACC["worker head"] += int(f[HEND]) - int(f[HSTART])
        ACC["worker: head end -> DONE (copy out, flags)"] += int(f[DONE_T]) - int(f[HEND])
        ACC["head 1 (caller)"] += h1e - h1s
        ACC["post end -> head 1 start (head 1 inputs)"] += h1s - t_post
        ACC["worker head start - head 1 start"] += int(f[HSTART]) - h1s
        if not MODE["serial"]:
            ACC["caller wait (head 1 end -> DONE seen)"] += t_seen - h1e
            ACC["DONE -> caller saw it"] += t_seen - int(f[DONE_T])
        ACC["caller clone of out"] += t_clone - t_seen
        ACC["steps"] += 1
    self.worker_steps += 1
    return [self.parents[0]._prediction(out1, requests[0][0]), self.parents[1]._prediction(out2, requests[1][0])]


def main(argv=None):
    from bench_graph import fill, write_checkpoints

    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.compose.sampler import SamplerConfig
    from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--worker-input", choices=("clone", "view", "private"), default="view",
                    help="the worker's inputs: the shared-memory views themselves (the package since session 17), "
                         "fresh clones and a time tensor built per step (before), or private tensors kept across "
                         "steps and copied into")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"probe_worker_head: load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {args.rounds} rounds, "
          f"worker input {args.worker_input}")
    print(f"  caller pid {os.getpid()}: {settings()}")
    spin_worker._worker_main = diag_worker_main
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-worker-")))

    def parent(n, trace=True):
        p, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=trace))
        return p, observing

    t_obs = time.time()
    obs = {}
    for n in ("rgb", "pcd"):
        p, observing = parent(n)
        core = HostCore(p, observing)
        fill(core, t_obs)
        obs[n] = core.window.at(t_obs)[0]
    sequential = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
    spin = replace(sequential, parallel_parents="auto", joint_step=True, joint_encode=True, joint_step_workers=True)
    orig_worker_init = spin_worker._Worker.__init__

    def worker_init(self, ctx, name, module, cpu, buffer_bytes, spin_s, idle_wait_s, max_traces):
        # the package's __init__ with the diag main; the input mode goes in through a partial
        import functools
        spin_worker._worker_main = functools.partial(diag_worker_main, input_mode=args.worker_input)
        orig_worker_init(self, ctx, name, module, cpu, buffer_bytes, spin_s, idle_wait_s, max_traces)

    spin_worker._Worker.__init__ = worker_init
    normal = Composer([parent("rgb")[0], parent("pcd")[0]], spin)
    swapped = Composer([parent("pcd")[0], parent("rgb")[0]], spin)
    eager = {order: Composer([parent(n, trace=False)[0] for n in order], sequential)
             for order in (("rgb", "pcd"), ("pcd", "rgb"))}
    for c in (normal, swapped):
        if not c._joint.wait_ready(120.0):
            raise SystemExit("worker not ready")
    spin_worker.SpinningHeadsStep.__call__ = diag_call
    # the Composer calls a joint step's ``start`` when it has one (session 17): without it, it calls ``__call__``,
    # the instrumented copy (the composer then converts parent 1's prediction after the wait, not during it)
    spin_worker.SpinningHeadsStep.start = None
    w2 = torch.tensor([0.5, 0.5], dtype=torch.float64)
    refs = {order: c.compose(c.encode([obs[n] for n in order]), w2, generator=0).actions for order, c in eager.items()}
    cases = {}
    for label, c, order in (("rgb+pcd(worker)", normal, ("rgb", "pcd")), ("pcd+rgb(worker)", swapped, ("pcd", "rgb"))):
        for serial in (False, True):
            def run(c=c, order=order, serial=serial):
                MODE["serial"] = serial
                out = c.compose(c.encode([obs[n] for n in order]), w2, generator=0).actions
                if not torch.equal(out, refs[order]):
                    raise SystemExit(f"chunk differs from the eager Composer's ({order}, serial={serial})")
            cases[f"{label} {'serial' if serial else 'conc'}"] = run
    for _ in range(30):
        for fn in cases.values():
            fn()
    time.sleep(0.5)
    per = {k: collections.defaultdict(list) for k in cases}
    for r in range(args.rounds):
        order = list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]
        for name, fn in order:
            ACC.clear()
            t0 = time.perf_counter_ns()
            fn()
            per[name]["chunk (wall)"].append((time.perf_counter_ns() - t0) / 1e6)
            n = ACC.pop("steps")
            for k, v in ACC.items():
                per[name][k].append(v / n / 1e3)
    print(f"\nmedians over {args.rounds} rounds of per-step means in us (chunk: ms); all chunks torch.equal to the "
          f"eager Composer's")
    labels = []
    for d in per.values():
        for k in d:
            if k not in labels:
                labels.append(k)
    names = list(cases)
    print(f"{'':44s}" + "".join(f"{n:>24s}" for n in names))
    for label in labels:
        cells = [f"{statistics.median(per[n][label]):24.1f}" if per[n].get(label) else f"{'—':>24s}" for n in names]
        print(f"{label:44s}" + "".join(cells))
    load = os.getloadavg()
    print(f"load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for c in (normal, swapped, *eager.values()):
        c.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
