"""Where the time of two in-process parents' forwards goes: one after the other vs two threads (docs/graph.md).

The ``bench_graph.py`` parents (``small`` RGB diffusion and DP3, or bigger heads with ``--unet-down-dims``, random
weights, batch 1, one torch intra-op thread as the hosts run) predict ``--calls`` times each per round, in three
ways, interleaved round by round:

* ``sequential``: rgb's calls, then pcd's, on this thread;
* ``threads``: pcd's calls on a second thread while rgb's run on this one (what ``parallel_parents`` does per step);
* ``threads pinned``: the same with each thread pinned to a CPU of its own (the first two this process may use).

Per parent and way it prints the median, per forward, of the thread's wall time, its CPU time and its run-queue wait
(``/proc/self/task/<tid>/schedstat``: runnable but not running, i.e. waiting for a core); what is left (wall - CPU -
run-queue) is time blocked, mostly waiting for the GIL. CPU time above the sequential one is the cost of handing
the GIL over between the threads (torch releases it inside every op and takes it back after).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/trace_inprocess.py [--unet-down-dims 256,512,1024] [--calls N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import fill, write_checkpoints  # noqa: E402

from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402


def schedstat() -> tuple[float, float]:
    """This thread's (CPU time, run-queue wait) in s."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        run_ns, wait_ns, _ = f.read().split()
    return int(run_ns) * 1e-9, int(wait_ns) * 1e-9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet-down-dims", type=lambda v: tuple(int(x) for x in v.split(",")), default=None)
    parser.add_argument("--calls", type=int, default=10, help="forwards per parent per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cpus = sorted(os.sched_getaffinity(0))
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="trace-inprocess-")), args.unet_down_dims)
    cores, encodings = {}, {}
    t_s = time.time()
    for name in ("rgb", "pcd"):
        parent, observing = load_host_parent(HostConfig(name=name, checkpoint=checkpoints[name]))
        cores[name] = HostCore(parent, observing)
        fill(cores[name], t_s)
        with torch.no_grad():
            encodings[name] = parent.encode(cores[name].window.at(t_s)[0])
    x = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(0))
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}

    def work(name: str, way: str, cpu: int | None = None) -> None:
        if cpu is not None:
            os.sched_setaffinity(threading.get_native_id(), {cpu})
        wall0, (cpu0, wait0) = time.perf_counter(), schedstat()
        with torch.no_grad():
            for _ in range(args.calls):
                cores[name].parent.predict(x, 50.0, encodings[name])
        wall1, (cpu1, wait1) = time.perf_counter(), schedstat()
        if cpu is not None:
            os.sched_setaffinity(threading.get_native_id(), set(cpus))
        rows.setdefault((way, name), []).append(((wall1 - wall0) / args.calls, (cpu1 - cpu0) / args.calls,
                                                 (wait1 - wait0) / args.calls))

    def sequential() -> None:
        work("rgb", "sequential")
        work("pcd", "sequential")

    def threads(way: str, pin: bool) -> None:
        other = threading.Thread(target=work, args=("pcd", way, cpus[1] if pin else None))
        other.start()
        work("rgb", way, cpus[0] if pin else None)
        other.join()

    ways = [sequential, lambda: threads("threads", False)]
    if len(cpus) >= 2:
        ways.append(lambda: threads("threads pinned", True))
    for way in ways:  # warm-up
        way()
    rows.clear()
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for way in (ways if r % 2 == 0 else ways[::-1]):
            way()
    load_after = os.getloadavg()
    print(f"trace_inprocess: load average {load_before[0]:.2f} -> {load_after[0]:.2f}, {args.rounds} rounds x "
          f"{args.calls} forwards per parent, medians per forward:")
    print(f"  {'way':<16} {'parent':<6} {'wall ms':>8} {'cpu ms':>8} {'run-queue ms':>13} {'blocked ms':>11}")
    for (way, name), values in rows.items():
        wall, cpu, wait = (statistics.median(v[i] for v in values) * 1e3 for i in range(3))
        print(f"  {way:<16} {name:<6} {wall:8.2f} {cpu:8.2f} {wait:13.2f} {wall - cpu - wait:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
