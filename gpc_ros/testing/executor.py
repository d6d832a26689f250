"""Test helpers for the franky executor (shared by the driver tests): a snapshot recorder, a started executor."""

from __future__ import annotations

import threading

import numpy as np

from gpc_ros.control.executor import ExecutorConfig, FrankaExecutor, RobotSnapshot
from gpc_ros.testing.spin import wait_until


class Recorder:
    """Every state snapshot the executor reads (from its loop thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snaps: list[RobotSnapshot] = []

    def __call__(self, snap: RobotSnapshot) -> None:
        """Keep ``snap`` (the executor's state listener)."""
        with self.lock:
            self.snaps.append(snap)

    def since(self, index: int) -> list[RobotSnapshot]:
        """The snapshots from ``index`` on."""
        with self.lock:
            return self.snaps[index:]

    def __len__(self) -> int:
        with self.lock:
            return len(self.snaps)

    def track(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """(executor clock s, TCP positions) between t0 and t1."""
        with self.lock:
            rows = [(s.time_s, *s.ee_position_m) for s in self.snaps if t0 <= s.time_s <= t1]
        a = np.array(rows)
        return a[:, 0], a[:, 1:]

    def robot_track(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, float]:
        """(robot clock s, positions, robot-clock seconds per executor-clock second) between t0 and t1."""
        with self.lock:
            rows = [(s.robot_time_s, *s.ee_position_m) for s in self.snaps if t0 <= s.time_s <= t1]
            wall = [s.time_s for s in self.snaps if t0 <= s.time_s <= t1]
        a = np.array(rows)
        pace = (a[-1, 0] - a[0, 0]) / (wall[-1] - wall[0])
        return a[:, 0], a[:, 1:], pace


def start_executor(host: str, **overrides) -> tuple[FrankaExecutor, Recorder]:
    """An executor connected to ``host`` (ExecutorConfig ``overrides``), with a first state, a Recorder, enabled."""
    executor = FrankaExecutor(ExecutorConfig(robot_host=host, **overrides)).start()
    assert executor.wait_connected(20.0), f"no connection to franky-sim at {host}"
    recorder = Recorder()
    executor.add_state_listener(recorder)
    wait_until(lambda: np.all(np.isfinite(executor.state.ee_position_m)), 5.0, "a first state reading",
               period_s=0.01)
    executor.enable(True)
    return executor, recorder
