"""Stopping the child processes a bench or test started: SIGINT (their Ctrl-C path) first, SIGKILL if they hang."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def interrupt_all(procs: Iterable[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """Send SIGINT to every process, then wait up to ``timeout_s`` for each and kill the ones still running."""
    procs = list(procs)
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
