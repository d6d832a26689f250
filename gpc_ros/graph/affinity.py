"""CPU affinity of a policy host process: which cores it may run on (``HostConfig.cpu_affinity``).

Two hosts on one machine compute their parents' steps at the same time only if the kernel runs them on different
cores. Left to itself, Linux often ran both on the same core while the other one served something else (measured in
docs/graph.md, "Why the separate hosts' steps did not overlap"), so their steps took turns and K = 2 separate hosts
cost as much as both parents one after the other. Pinning each host to a core of its own removes that. It is opt-in:
on a machine shared with other busy processes a pinned host cannot move away from a loaded core.

The list syntax is taskset's: ``"0"``, ``"0,2"``, ``"2-3"``, ``"0,2-3"`` (``""`` = no pinning).
"""

from __future__ import annotations

import os


def parse_cpu_list(text: str, field: str = "cpu_affinity") -> frozenset[int]:
    """CPU ids of a taskset-style list (``"0,2-3"`` -> {0, 2, 3}); ``""`` -> the empty set (no pinning).

    Args:
        text: The list: comma-separated ids or ``a-b`` ranges (``a <= b``), ids >= 0.
        field: The name used in the error message.

    Raises:
        ValueError: Naming ``field``, the syntax allowed and the value received.
    """
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")) if text.strip() else ():
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            first, last = -1, -1
        if first < 0 or last < first:
            raise ValueError(f"{field} must be a CPU list such as '0', '0,2' or '2-3' (ids >= 0, ranges low-high), "
                             f"or '' for no pinning; got {text!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def pin_process(cpus: frozenset[int] | set[int]) -> list[int]:
    """Restrict every thread of this process (and the threads it creates later) to ``cpus``.

    ``os.sched_setaffinity`` acts on one thread; the threads that exist already (DDS, executor, torch) are each
    pinned, and new threads inherit the affinity of the thread that creates them.

    Args:
        cpus: CPU ids (non-empty).

    Returns:
        The CPU ids the process now runs on, sorted.

    Raises:
        ValueError: A CPU this process may not use (not present, offline or outside its cgroup), naming the ones
            it may use.
    """
    allowed = os.sched_getaffinity(0)
    if not cpus or not set(cpus) <= allowed:
        raise ValueError(f"cpu_affinity {sorted(cpus)} is not a subset of the CPUs this process may use "
                         f"{sorted(allowed)}")
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return sorted(os.sched_getaffinity(0))
