"""A franky-sim FR3 server in a child process, for the demo, the bringup, tests and benchmarks.

The child runs :mod:`gpc_ros.sim.franky_sim_server` on a loopback address leased machine-wide (so concurrent runs
never collide on TCP 1337/1338). The process can be killed and started again on the same address, which is how
driver tests simulate a robot that drops off the network and comes back.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpc_ros.leases import Lease, acquire

ROBOT_PORT = 1337
GRIPPER_PORT = 1338


def reset_scheduling() -> None:
    """Put the calling thread back on normal (SCHED_OTHER) scheduling.

    libfranka switches any thread that calls franky to real-time SCHED_FIFO 99 (as root, even with
    ``RealtimeConfig.Ignore``); a process started from such a thread inherits it, and a busy simulator at that
    priority starves the whole machine.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """In the child, before exec: normal scheduling, and SIGTERM when the parent dies (no orphaned simulators)."""
    reset_scheduling()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _ports_free(host: str) -> bool:
    for port in (ROBOT_PORT, GRIPPER_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def lease_loopback_host() -> tuple[Lease, str]:
    """Lease an address 127.0.0.k (k in 2..254) whose robot and gripper ports are free."""
    lease = acquire("loopback", range(2, 255), usable=lambda k: _ports_free(f"127.0.0.{k}"))
    return lease, f"127.0.0.{lease.value}"


class FrankySimProcess:
    """A franky-sim server process on its own loopback address.

    Use as a context manager; ``host`` is what ``franky.Robot(host)`` connects to.
    """

    def __init__(self, pace: str = "realtime", startup_timeout_s: float = 60.0, task: str = "") -> None:
        """Lease an address; ``task`` serves that task's cell instead of the bare arm.

        The cell has its scene, shared state and reset channel (:mod:`gpc_ros.sim.cell_control`).
        """
        if task:
            from gpc_ros.sim.tasks import get_task

            get_task(task)
        self.pace = pace
        self.task = task
        self.startup_timeout_s = startup_timeout_s
        self._lease, self.host = lease_loopback_host()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix=f"franky-sim-{self.host}-", suffix=".log")[1])

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> "FrankySimProcess":
        """Start the server and block until it accepts connections (or raise with its log)."""
        if self.alive:
            return self
        log = open(self._log, "ab")
        offset = log.tell()  # the log keeps earlier runs: look for this run's READY only
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gpc_ros.sim.franky_sim_server", "--host", self.host, "--pace", self.pace,
             *(["--task", self.task] if self.task else [])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"franky-sim on {self.host} exited with {self._proc.returncode}:\n{self.log_text()}")
            if b"READY" in self._log.read_bytes()[offset:]:
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"franky-sim on {self.host} not ready after {self.startup_timeout_s} s:\n{self.log_text()}")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): the robot disappears from the network mid-whatever."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server politely (SIGTERM), killing it if it does not exit in ``timeout_s``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "FrankySimProcess":
        """Stop the server politely and start it again on the same address."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server, release the address and remove the log."""
        self.stop()
        self._lease.release()
        self._log.unlink(missing_ok=True)

    @property
    def alive(self) -> bool:
        """The server process is running."""
        return self._proc is not None and self._proc.poll() is None

    def stepped_on(self) -> int:
        """Ticks the server stepped on without a commanded motion's command so far (its log; docs/sim.md)."""
        from gpc_ros.sim.franky_sim_server import STEPPED_ON_FORMAT

        pattern = re.escape(STEPPED_ON_FORMAT).replace("%d", r"(\d+)")
        return max((int(n) for n in re.findall(pattern, self.log_text())), default=0)

    def log_text(self) -> str:
        """The last 4000 characters of the server's log."""
        return self._log.read_text(errors="replace")[-4000:] if self._log.exists() else ""

    def __enter__(self) -> "FrankySimProcess":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
