"""Start, watch and stop the graph's processes without a ROS install (what ``gpc-ros bringup`` runs).

Every process of a :class:`~gpc_ros.graph.description.GraphDescription` is started as a plain child
(``python -m gpc_ros.nodes.<executable> --ros-args ...``) in its own session, with the graph's ROS environment;
each output line is forwarded prefixed with ``[name]``. A child that exits while the graph runs is reported
(name, pid, exit status) and, per ``on_child_exit``, the whole graph is stopped or the child restarted (at most
``max_restarts`` times, then the graph stops). :meth:`Supervisor.stop` (Ctrl-C) sends SIGINT to every child in
reverse start order and SIGKILL to any still alive after ``stop_timeout_s``; every child starts with SIGINT at its
default, even where the supervisor itself was started with SIGINT ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gpc_ros.graph.description import GraphDescription, ProcessSpec
from gpc_ros.sim.franky_sim_process import _die_with_parent

logger = logging.getLogger(__name__)


def _child_setup() -> None:
    """In the child, before exec: die with the parent, and SIGINT at its default.

    :meth:`Supervisor.stop` stops the children with SIGINT. A supervisor started with SIGINT ignored (a shell
    script's background job) would pass the ignored SIGINT on to every child, which then runs on until SIGKILL
    (the driver would not stop the arm itself). libc's ``signal`` here: Python's ``signal.signal`` may refuse to
    run in a forked child of a thread other than the main one.
    """
    _die_with_parent()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).signal(signal.SIGINT, 0)  # SIG_DFL = 0
    except OSError:
        pass


@dataclass
class Child:
    """One running (or finished) process of the graph."""

    spec: ProcessSpec
    proc: subprocess.Popen
    restarts: int = 0
    pump: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Runs a graph description; a context manager (leaving it stops every child)."""

    def __init__(self, description: GraphDescription, env: Mapping[str, str], *, python: str = sys.executable,
                 output: Callable[[str], None] | None = None) -> None:
        self.description = description
        self.env = dict(env)
        self.python = python
        self.output = output or (lambda line: print(line, flush=True))
        self.children: dict[str, Child] = {}
        self.events: list[str] = []
        """What happened to the children (exits, restarts), one sentence each, in order."""
        self._stopping = threading.Event()

    def _report(self, message: str) -> None:
        self.events.append(message)
        self.output(f"[bringup] {message}")

    def _spawn(self, spec: ProcessSpec) -> subprocess.Popen:
        proc = subprocess.Popen(spec.argv(self.python), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                preexec_fn=_child_setup)  # noqa: PLW1509 (prctl and signal only)
        return proc

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.output(f"[{name}] {line.rstrip()}")

    def _start_child(self, spec: ProcessSpec, restarts: int = 0) -> Child:
        proc = self._spawn(spec)
        child = Child(spec, proc, restarts)
        child.pump = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True,
                                      name=f"out-{spec.name}")
        child.pump.start()
        self.children[spec.name] = child
        self._report(f"started {spec.name} (pid {proc.pid})")
        return child

    def start(self) -> Supervisor:
        """Start every process of the description; returns self."""
        for spec in self.description.processes:
            self._start_child(spec)
        return self

    def poll(self) -> bool:
        """Check the children once; handle exits per the description. False once the graph has stopped."""
        if self._stopping.is_set():
            return False
        for name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            self._report(f"{name} (pid {child.proc.pid}) exited with status {code}")
            if self.description.on_child_exit == "restart" and child.restarts < self.description.max_restarts:
                self._report(f"restarting {name} ({child.restarts + 1} of {self.description.max_restarts})")
                self._start_child(child.spec, child.restarts + 1)
                continue
            why = ("on_child_exit is stop" if self.description.on_child_exit == "stop"
                   else f"{name} exited {child.restarts + 1} times (max_restarts {self.description.max_restarts})")
            self._report(f"stopping the graph: {why}")
            self.stop()
            return False
        return True

    def run(self, poll_period_s: float = 0.2, until: Callable[[], bool] | None = None) -> int:
        """Watch the children until one exit stops the graph, ``until()`` is true, or Ctrl-C.

        Args:
            poll_period_s: Seconds between checks of the children.
            until: Optional condition; the graph is stopped once it returns true.

        Returns:
            0 after Ctrl-C or ``until``, 1 when a child's exit stopped the graph.
        """
        try:
            while self.poll():
                if until is not None and until():
                    self.stop()
                    return 0
                time.sleep(poll_period_s)
            return 1
        except KeyboardInterrupt:
            self._report("Ctrl-C: stopping every process")
            self.stop()
            return 0

    def stop(self) -> None:
        """SIGINT to every child (reverse start order), SIGKILL to those alive after ``stop_timeout_s``."""
        self._stopping.set()
        alive = [c for c in reversed(list(self.children.values())) if c.proc.poll() is None]
        for child in alive:
            try:
                os.killpg(child.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.description.stop_timeout_s
        for child in alive:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._report(f"{child.spec.name} (pid {child.proc.pid}) ignored SIGINT for "
                             f"{self.description.stop_timeout_s} s: SIGKILL")
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.proc.wait(timeout=10)
        for child in self.children.values():
            if child.pump is not None:
                child.pump.join(timeout=2)

    def __enter__(self) -> Supervisor:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
