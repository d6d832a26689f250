"""Bounded waits for tests, each failing with one clear message.

On a ROS executor without bare sleeps (no rclpy import here: it takes the executor), and on any condition (a file,
a process, a socket).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def spin_until(executor, predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Spin ``executor`` until ``predicate()`` holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, period_s: float = 0.1,
               check: Callable[[], None] | None = None) -> None:
    """Poll ``predicate()`` every ``period_s`` until it holds; ``pytest.fail`` naming ``what`` after ``timeout_s``.

    ``check()`` (optional) runs before each poll and may fail the test itself (e.g. "the process is still alive").
    Use generous timeouts: the wait ends as soon as the condition holds, so they cost nothing when all is well.
    """
    import pytest

    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        if predicate():
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(period_s)
