"""Watchdog: the arm must not keep following an old plan when the policy stops sending chunks.

Armed while a plan executes; each accepted chunk feeds it. If no chunk arrived for ``timeout_s`` it *trips*: the
executor stops the arm, drops the plan and reports ``watchdog_tripped`` until the next chunk arrives.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class Watchdog:
    """Tracks the time since the last fresh chunk on ``clock`` (s)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float]) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0.0):
            raise ValueError(f"Watchdog timeout_s must be a number > 0 s, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_feed_s: float | None = None
        self._tripped = False
        self.trips = 0

    def feed(self) -> None:
        """A fresh chunk arrived: (re)arm and clear the tripped state."""
        with self._lock:
            self._last_feed_s = self._clock()
            self._tripped = False

    def disarm(self) -> None:
        """Nothing to watch (stopped, disabled): never trips until fed again."""
        with self._lock:
            self._last_feed_s = None

    def check(self) -> bool:
        """True exactly once per starvation: when the timeout has just passed (the caller then stops the arm)."""
        with self._lock:
            if self._last_feed_s is None or self._tripped:
                return False
            if self._clock() - self._last_feed_s > self.timeout_s:
                self._tripped = True
                self.trips += 1
                return True
            return False

    @property
    def tripped(self) -> bool:
        """Whether the watchdog fired and no chunk has arrived since."""
        with self._lock:
            return self._tripped

    @property
    def age_s(self) -> float | None:
        """Seconds since the last chunk (None when disarmed)."""
        with self._lock:
            return None if self._last_feed_s is None else self._clock() - self._last_feed_s
