"""Action chunks: the timed targets a policy (the composer) asks the arm to follow.

An :class:`ActionChunk` is a value. Step ``i`` is due at ``start_time_s + i * dt_s`` on the driver's clock (the
node uses ROS time in seconds, i.e. ``header.stamp`` of the chunk message; the core takes any clock it is given).
Each step carries either an end-effector pose target in the base frame ``fr3_link0`` (position in m, quaternion
x, y, z, w) or a joint position target (rad, fr3_joint1..7), plus an optional gripper width (m).

Malformed input (wrong shapes, non-finite values, non-positive dt, degenerate quaternions) is rejected with
:class:`ChunkRejectedError`, whose message names the field, what is allowed and what was received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Degrees of freedom of the FR3 arm (fr3_joint1..7).
ARM_DOF = 7
#: A quaternion whose norm is outside this range is not a rotation that lost a little precision but garbage.
QUATERNION_NORM_RANGE = (0.5, 2.0)
#: Smallest step period: the FR3's 1 kHz control period (s).
MIN_DT_S = 1e-3
#: Upper bound on the number of steps in one chunk (a policy horizon is 8-64; more is a bug upstream).
MAX_CHUNK_STEPS = 1024


class ChunkRejectedError(ValueError):
    """An action chunk (or one of its targets) cannot be executed; the message says why."""


def _as_float_array(name: str, value: Any, shape_hint: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ChunkRejectedError(f"{name} must be a float array of shape {shape_hint}, "
                                 f"got {type(value).__name__}: {exc}")
    return arr


def _require_shape(name: str, arr: np.ndarray, n_steps: int | None, width: int | None) -> int:
    want = f"(N, {width})" if width is not None else "(N,)"
    ok_ndim = arr.ndim == (2 if width is not None else 1)
    if not ok_ndim or (width is not None and arr.shape[1] != width):
        raise ChunkRejectedError(f"{name} must have shape {want}, got shape {arr.shape}")
    if n_steps is not None and arr.shape[0] != n_steps:
        raise ChunkRejectedError(f"{name} must have {n_steps} rows like the other targets, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise ChunkRejectedError(f"{name} must be finite, got a non-finite value at step {bad}")
    return int(arr.shape[0])


@dataclass(frozen=True, eq=False)
class ActionChunk:
    """Timed targets for the arm and the gripper (construct with :meth:`from_arrays` to validate loose input).

    Exactly one of ``positions_m``/``quaternions_xyzw`` (Cartesian) or ``joint_positions_rad`` (joint) is set.
    """

    start_time_s: float
    """Time the first step is due, on the driver's clock (ROS time in s in the node)."""
    dt_s: float
    """Time between consecutive steps (s), in [1 ms, 10 s]."""
    positions_m: np.ndarray | None = None
    """(N, 3) end-effector (fr3_hand_tcp) positions in fr3_link0 (m)."""
    quaternions_xyzw: np.ndarray | None = None
    """(N, 4) end-effector orientations in fr3_link0, unit quaternions x, y, z, w."""
    joint_positions_rad: np.ndarray | None = None
    """(N, 7) joint positions fr3_joint1..7 (rad), instead of poses."""
    gripper_width_m: np.ndarray | None = None
    """(N,) gripper opening width (m), optional in either mode."""
    n_steps: int = field(init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.start_time_s, (int, float)) and np.isfinite(self.start_time_s)):
            raise ChunkRejectedError(f"start_time_s must be a finite number of seconds, got {self.start_time_s!r}")
        if not (isinstance(self.dt_s, (int, float)) and np.isfinite(self.dt_s) and MIN_DT_S <= self.dt_s <= 10.0):
            raise ChunkRejectedError(f"dt_s must be in [{MIN_DT_S}, 10] s, got {self.dt_s!r}")
        cartesian = self.positions_m is not None or self.quaternions_xyzw is not None
        if cartesian == (self.joint_positions_rad is not None):
            raise ChunkRejectedError("a chunk needs either positions_m + quaternions_xyzw (Cartesian) or "
                                     "joint_positions_rad (joint), got "
                                     + ("both" if cartesian else "neither"))
        if cartesian:
            if self.positions_m is None or self.quaternions_xyzw is None:
                raise ChunkRejectedError("a Cartesian chunk needs both positions_m (N, 3) and quaternions_xyzw (N, 4)")
            n = _require_shape("positions_m", self.positions_m, None, 3)
            _require_shape("quaternions_xyzw", self.quaternions_xyzw, n, 4)
            norms = np.linalg.norm(self.quaternions_xyzw, axis=1)
            lo, hi = QUATERNION_NORM_RANGE
            if np.any((norms < lo) | (norms > hi)):
                bad = int(np.argmax((norms < lo) | (norms > hi)))
                raise ChunkRejectedError(f"quaternions_xyzw must be unit quaternions (norm in [{lo}, {hi}] is "
                                         f"renormalised), got norm {norms[bad]:.3g} at step {bad}")
        else:
            n = _require_shape("joint_positions_rad", self.joint_positions_rad, None, ARM_DOF)
        if self.gripper_width_m is not None:
            _require_shape("gripper_width_m", self.gripper_width_m, n, None)
        if not 1 <= n <= MAX_CHUNK_STEPS:
            raise ChunkRejectedError(f"a chunk must have 1..{MAX_CHUNK_STEPS} steps, got {n}")
        object.__setattr__(self, "n_steps", n)
        for name in ("positions_m", "quaternions_xyzw", "joint_positions_rad", "gripper_width_m"):
            arr = getattr(self, name)
            if arr is not None:
                arr.setflags(write=False)

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        start_time_s: Any,
        dt_s: Any,
        *,
        positions_m: Any = None,
        quaternions_xyzw: Any = None,
        joint_positions_rad: Any = None,
        gripper_width_m: Any = None,
    ) -> "ActionChunk":
        """Validate loose input (lists, arrays of any dtype) into a chunk.

        Quaternions are renormalised and made sign-continuous (q and -q are the same rotation; consecutive ones are
        flipped to the same hemisphere).

        Args:
            start_time_s: When the first step is due (s, driver clock).
            dt_s: Time between steps (s).
            positions_m: (N, 3) TCP positions (m, base frame); Cartesian chunks only, with ``quaternions_xyzw``.
            quaternions_xyzw: (N, 4) TCP orientations (x, y, z, w); Cartesian chunks only.
            joint_positions_rad: (N, 7) arm joint targets (rad); joint chunks only.
            gripper_width_m: Optional (N,) gripper width targets (m).

        Returns:
            The validated chunk.

        Raises:
            ChunkRejectedError: an input is not numeric, has the wrong shape, is not finite, or the chunk is neither
                or both of Cartesian and joint.
        """
        try:
            start = float(start_time_s)
            dt = float(dt_s)
        except (TypeError, ValueError):
            raise ChunkRejectedError(f"start_time_s and dt_s must be numbers, got {start_time_s!r}, {dt_s!r}") from None
        arrays: dict[str, np.ndarray | None] = {}
        for name, value, hint in (("positions_m", positions_m, "(N, 3)"),
                                  ("quaternions_xyzw", quaternions_xyzw, "(N, 4)"),
                                  ("joint_positions_rad", joint_positions_rad, f"(N, {ARM_DOF})"),
                                  ("gripper_width_m", gripper_width_m, "(N,)")):
            arrays[name] = None if value is None else _as_float_array(name, value, hint).copy()
        chunk = cls(start, dt, **arrays)
        if chunk.quaternions_xyzw is not None:
            q = np.array(chunk.quaternions_xyzw)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            for i in range(1, len(q)):
                if np.dot(q[i], q[i - 1]) < 0.0:
                    q[i] = -q[i]
            q.setflags(write=False)
            object.__setattr__(chunk, "quaternions_xyzw", q)
        return chunk

    # -- queries ---------------------------------------------------------------------------------------------------
    @property
    def is_cartesian(self) -> bool:
        """True for a Cartesian chunk (TCP poses), False for a joint chunk."""
        return self.positions_m is not None

    @property
    def times_s(self) -> np.ndarray:
        """(N,) time each step is due (s, driver clock)."""
        return self.start_time_s + self.dt_s * np.arange(self.n_steps)

    @property
    def end_time_s(self) -> float:
        """Time the last step is due (s)."""
        return self.start_time_s + self.dt_s * (self.n_steps - 1)

    def tail(self, first: int) -> "ActionChunk":
        """The chunk without its first ``first`` steps (the new first step keeps its original due time)."""
        if not 0 <= first < self.n_steps:
            raise ValueError(f"first must be in 0..{self.n_steps - 1}, got {first}")

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.array(a[first:])

        return ActionChunk(self.start_time_s + first * self.dt_s, self.dt_s, cut(self.positions_m),
                           cut(self.quaternions_xyzw), cut(self.joint_positions_rad), cut(self.gripper_width_m))

    def __repr__(self) -> str:
        kind = "cartesian" if self.is_cartesian else "joint"
        return (f"ActionChunk({kind}, n_steps={self.n_steps}, start_time_s={self.start_time_s:.3f}, "
                f"dt_s={self.dt_s:.3f}, gripper={'yes' if self.gripper_width_m is not None else 'no'})")
