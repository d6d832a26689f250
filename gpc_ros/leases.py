"""Machine-wide exclusive leases on small integer resources (ROS domain ids, loopback addresses).

A lease is an ``fcntl.flock`` on ``<lock_dir>/<kind>-<n>.lock``: it is released when the holder closes it or dies,
so a crashed test run never leaks a lease. Several pytest processes on one machine (parallel CI jobs, developers)
therefore never pick the same domain or address.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

LOCK_DIR = Path(os.environ.get("GPC_ROS_LOCK_DIR", Path(tempfile.gettempdir()) / "gpc_ros-leases"))


class Lease:
    """An exclusive claim on ``value``; release with :meth:`release` or a ``with`` block."""

    def __init__(self, kind: str, value: int, fd: int) -> None:
        self.kind, self.value, self._fd = kind, value, fd

    def release(self) -> None:
        """Unlock and close the lease file so another process can take the value; idempotent."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.kind}={self.value}, held={self._fd >= 0})"


def acquire(kind: str, candidates: Iterable[int], usable: Callable[[int], bool] = lambda _: True) -> Lease:
    """Lease the first free value of ``candidates`` (tried in random order) that ``usable`` accepts.

    Raises:
        RuntimeError: every candidate is leased by another process or unusable.
    """
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    values = list(candidates)
    random.shuffle(values)
    for value in values:
        fd = os.open(LOCK_DIR / f"{kind}-{value}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if usable(value):
            return Lease(kind, value, fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    raise RuntimeError(f"no free {kind} among {len(values)} candidates (all leased under {LOCK_DIR} or in use)")
