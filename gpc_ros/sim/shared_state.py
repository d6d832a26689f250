"""The simulator's state shared with other processes: simulated time and MuJoCo ``qpos``, through shared memory.

The cell server writes, after every 1 ms physics step, the simulated time and the full ``qpos`` (arm, fingers,
free objects) into a small file in ``/dev/shm`` guarded by a sequence counter (a seqlock: odd while writing).
Readers (camera renderers, the episode runner's clock) copy a consistent snapshot without locking and without
slowing the simulator. One file per served cell, named after its loopback address (leased machine-wide, so names
never collide); a JSON file beside it says which task the cell serves and which process serves it.

Layout of ``gpc_ros_sim_<host>.state``: ``uint64 seq | float64 time_s | float64 run_until_s | float64 qpos[nq]``
(little endian). ``run_until_s`` is the one value a client writes: the server does not step past it (a barrier for
lock-step episodes, where the simulated time waits while cameras render and a policy thinks); +inf = free running.
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HEADER = 24  # seq (uint64) + time (float64) + run_until (float64)


def runtime_dir() -> Path:
    """Where cells put their state, meta and control files (``/dev/shm`` when present)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def cell_paths(host: str) -> tuple[Path, Path, Path]:
    """(state file, meta JSON, control socket) of the cell served on ``host``."""
    # not Path.with_suffix: it would take ".k" of "127.0.0.k" for the suffix and give every cell the same files
    base = f"gpc_ros_sim_{host}"
    return runtime_dir() / f"{base}.state", runtime_dir() / f"{base}.json", runtime_dir() / f"{base}.sock"


class SharedStateWriter:
    """Owned by the server process: ``write(time_s, qpos)`` after each physics step."""

    def __init__(self, path: Path, nq: int) -> None:
        self.path = Path(path)
        self.nq = int(nq)
        size = _HEADER + 8 * self.nq
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"\0" * size)
        os.replace(tmp, self.path)
        self._file = open(self.path, "r+b")
        self._mm = mmap.mmap(self._file.fileno(), size)
        self._seq = np.frombuffer(self._mm, dtype="<u8", count=1, offset=0)
        self._time = np.frombuffer(self._mm, dtype="<f8", count=1, offset=8)
        self._run_until = np.frombuffer(self._mm, dtype="<f8", count=1, offset=16)
        self._run_until[0] = np.inf
        self._qpos = np.frombuffer(self._mm, dtype="<f8", count=self.nq, offset=_HEADER)

    def may_step(self, time_s: float) -> bool:
        """False while a client holds the simulator at a barrier at or before ``time_s``."""
        return time_s < self._run_until[0]

    def write(self, time_s: float, qpos: np.ndarray) -> None:
        """Publish one consistent (time, qpos) pair."""
        self._seq[0] += 1  # odd: writing
        self._time[0] = time_s
        self._qpos[:] = qpos
        self._seq[0] += 1  # even: consistent

    def close(self) -> None:
        """Unmap and remove the file."""
        del self._seq, self._time, self._qpos, self._run_until
        self._mm.close()
        self._file.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StateSnapshot:
    """A consistent copy: simulated time (s), ``qpos`` and the writer's sequence number (grows every step)."""

    time_s: float
    qpos: np.ndarray
    seq: int


class SharedStateReader:
    """Read side: ``snapshot()`` (consistent copy) and ``time_s()`` (the cell's clock, s)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no simulated cell state at {self.path} (is `gpc-ros sim-server --task ...` "
                                    f"running on that address?)")
        self._file = open(self.path, "r+b")
        size = os.fstat(self._file.fileno()).st_size
        if size < _HEADER or (size - _HEADER) % 8:
            raise ValueError(f"{self.path} is not a gpc_ros cell state file ({size} bytes)")
        self.nq = (size - _HEADER) // 8
        self._mm = mmap.mmap(self._file.fileno(), size)
        self._seq = np.frombuffer(self._mm, dtype="<u8", count=1, offset=0)
        self._time = np.frombuffer(self._mm, dtype="<f8", count=1, offset=8)
        self._run_until = np.frombuffer(self._mm, dtype="<f8", count=1, offset=16)
        self._qpos = np.frombuffer(self._mm, dtype="<f8", count=self.nq, offset=_HEADER)

    def snapshot(self, timeout_s: float = 10.0) -> StateSnapshot:
        """A consistent copy (retries while the writer is mid-write; ``TimeoutError`` if it never finishes).

        Between retries the reader sleeps (50 us) instead of spinning: a writer preempted mid-write on a loaded
        machine must get the CPU back to finish (a spinning reader made 1 s timeouts at load ~8 on 2 cores).
        """
        deadline = time.monotonic() + timeout_s
        tries = 0
        while True:
            s1 = int(self._seq[0])
            t = float(self._time[0])
            q = self._qpos.copy()
            if s1 % 2 == 0 and int(self._seq[0]) == s1:
                return StateSnapshot(t, q, s1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no consistent state in {self.path} within {timeout_s} s (writer stuck?)")
            tries += 1
            if tries > 3:
                time.sleep(5e-5)

    def time_s(self) -> float:
        """The simulated time now (s): the executor's and the episode runner's clock."""
        return self.snapshot().time_s

    def hold_at(self, time_s: float) -> None:
        """Let the simulator run up to ``time_s`` and hold there (``float('inf')``: run freely)."""
        self._run_until[0] = time_s

    def close(self) -> None:
        """Unmap the file (it stays for other readers)."""
        try:
            del self._seq, self._time, self._qpos, self._run_until
            self._mm.close()
        except (AttributeError, BufferError):
            pass
        self._file.close()


def write_meta(path: Path, meta: dict) -> None:
    """Write the cell's meta JSON atomically."""
    tmp = path.with_suffix(".jsontmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path)


def read_meta(path: Path) -> dict:
    """Read a cell's meta JSON."""
    return json.loads(Path(path).read_text())
