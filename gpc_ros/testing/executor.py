"""Helpers for tests that drive a :class:`~gpc_ros.control.executor.FrankaExecutor` against franky-sim.

- :func:`wait_for`: poll a condition with a generous, bounded timeout (tests wait on conditions, never sleep).
- :class:`Recorder`: a state listener keeping every snapshot the executor's loop read, with the slices tests need.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from gpc_ros.control.executor import RobotSnapshot


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Return once ``predicate()`` holds; raise AssertionError naming ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Recorder:
    """Every state snapshot the executor reads (called from its loop thread; register with add_state_listener)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snaps: list[RobotSnapshot] = []

    def __call__(self, snap: RobotSnapshot) -> None:
        """Keep ``snap`` (the executor's state-listener signature)."""
        with self.lock:
            self.snaps.append(snap)

    def __len__(self) -> int:
        with self.lock:
            return len(self.snaps)

    def since(self, index: int) -> list[RobotSnapshot]:
        """The snapshots from position ``index`` on (``len(recorder)`` before an action marks its start)."""
        with self.lock:
            return self.snaps[index:]

    def track(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """(executor-clock times (s), franky's ``O_T_EE`` positions (m)) of the snapshots between t0 and t1."""
        with self.lock:
            rows = [(s.time_s, *s.ee_position_m) for s in self.snaps if t0 <= s.time_s <= t1]
        a = np.array(rows)
        return a[:, 0], a[:, 1:]

    def robot_track(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(robot clock (s), ``O_T_EE`` positions (m), robot-clock seconds per executor-clock second) in [t0, t1]."""
        with self.lock:
            rows = [(s.robot_time_s, *s.ee_position_m) for s in self.snaps if t0 <= s.time_s <= t1]
            wall = [s.time_s for s in self.snaps if t0 <= s.time_s <= t1]
        a = np.array(rows)
        pace = (a[-1, 0] - a[0, 0]) / (wall[-1] - wall[0])
        return a[:, 0], a[:, 1:], pace


class CommandStream:
    """Robot factory for FrankaExecutor that records every 1 kHz command franky sends (its motion callbacks).

    ``FrankaExecutor(config, robot_factory=stream)``; each row is (robot time s, commanded joint velocities rad/s,
    measured joints rad) for velocity commands. The callback holds no reference to the robot (franky keeps it alive
    with the motion, and franky-sim takes one client).
    """

    def __init__(self) -> None:
        self.rows: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.lock = threading.Lock()
        self.recording = False

    def __call__(self, host: str):
        """Connect like the executor's default factory, wrapped so that motions get the recording callback."""
        import franky

        return _RecordingRobot(franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore), self)

    def velocities(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, (N, 7) commanded joint velocities, (N, 7) measured joints), sorted, one row per robot ms."""
        with self.lock:
            rows = sorted(self.rows, key=lambda r: r[0])
        t = np.array([r[0] for r in rows])
        keep = np.concatenate([[True], np.diff(t) > 0]) if len(t) else np.zeros(0, bool)
        dq = np.array([r[1] for r in rows]).reshape(-1, 7)
        q = np.array([r[2] for r in rows]).reshape(-1, 7)
        return t[keep], dq[keep], q[keep]


class _RecordingRobot:
    def __init__(self, robot, stream: CommandStream) -> None:
        object.__setattr__(self, "_robot", robot)
        object.__setattr__(self, "_stream", stream)

    def move(self, motion, *args, **kwargs):
        stream = self._stream
        if stream.recording and hasattr(motion, "register_callback"):
            rows, lock = stream.rows, stream.lock

            def callback(state, dt, rel, abs_time, signal) -> None:
                if hasattr(signal, "dq"):
                    with lock:
                        rows.append((abs_time.to_sec(), np.array(signal.dq), np.array(state.q)))
            motion.register_callback(callback)
        return self._robot.move(motion, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._robot, name)

    def __setattr__(self, name, value):
        setattr(self._robot, name, value)
