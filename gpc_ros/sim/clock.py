"""The simulated cell's clock for a ROS graph (``/clock``), without ROS here.

On the simulated cell every node of the graph runs on the **simulated clock** (``use_sim_time``), as the cell's own
episodes do (:mod:`gpc_ros.sim.cell`): franky's motions are timed by the simulator's state packets (1 per simulated
ms), so the driver's chunk times, the cameras' stamps, the composer's replan period and the driver's watchdog must
count simulated seconds too. Then a machine too busy to simulate in real time slows the whole graph down by the same
factor instead of starving the policy (the real-time factor is reported by ``gpc-ros demo``). ``sim_clock_node``
publishes :class:`SimClock` readings on ``/clock``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gpc_ros.sim.shared_state import SharedStateReader, cell_paths


@dataclass(frozen=True)
class SimClockConfig:
    """sim_clock_node: where the cell runs and how often its time is published."""

    sim_host: str = "127.0.0.2"
    """Loopback address of the served simulated cell (gpc-ros sim-server --host)."""
    period_s: float = 0.01
    """Wall seconds between two readings (a new /clock message only when the simulated time moved). Every node
    with use_sim_time wakes up for each message: 100 Hz keeps that cheap and the clock 10 ms fine at real time."""
    open_retry_s: float = 0.5
    """Retry attaching to a cell that is not served yet this often (wall s)."""

    def __post_init__(self) -> None:
        if not isinstance(self.sim_host, str) or not self.sim_host:
            raise ValueError(f"SimClockConfig.sim_host must be a loopback address; got {self.sim_host!r}")
        for name in ("period_s", "open_retry_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0005 <= value <= 1.0):
                raise ValueError(f"SimClockConfig.{name} must be in [0.0005, 1] s; got {value!r}")


class SimClock:
    """The served cell's simulated time (s); ``read()`` is None until the cell serves (then attaches once)."""

    def __init__(self, config: SimClockConfig) -> None:
        self.config = config
        self._reader: SharedStateReader | None = None
        self._next_try = 0.0
        self.last_s: float | None = None

    def read(self) -> float | None:
        """The simulated time now, or None while no cell serves on ``sim_host``."""
        if self._reader is None:
            if time.monotonic() < self._next_try:
                return None
            try:
                self._reader = SharedStateReader(cell_paths(self.config.sim_host)[0])
            except (OSError, ValueError):
                self._next_try = time.monotonic() + self.config.open_retry_s
                return None
        self.last_s = self._reader.time_s()
        return self.last_s

    def close(self) -> None:
        """Detach from the cell's shared state (idempotent)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
