"""Test and probe helpers on a franky robot: its planner limits, and a chain of motions on the robot's clock.

A chain of motions replaces each motion by the next through franky reactions (``Measure.REL_TIME``), so re-plans
happen at fixed *robot* times however loaded the machine is; every 1 kHz command franky computes is recorded.
No rclpy here; franky is imported where it is used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Wall-clock seconds after which a chain that never reaches its robot time is given up (only against a hang).
GIVE_UP_S = 120.0


def set_planner_limits(robot, limits: Mapping[str, float | Sequence[float]],
                       relative_dynamics_factor: float = 1.0) -> None:
    """Set franky's planner limits by name (e.g. ``"joint_acceleration_limit"``), each capped at franky's maximum.

    Args:
        robot: A connected ``franky.Robot``.
        limits: Limit attribute name -> value (a number, or 7 numbers for the joint limits), franky's units.
        relative_dynamics_factor: The robot's relative dynamics factor (all three components), in (0, 1].
    """
    robot.relative_dynamics_factor = relative_dynamics_factor
    for name, value in limits.items():
        limit = getattr(robot, name)
        if np.ndim(value):
            limit.set(np.minimum(np.asarray(value, dtype=np.float64), np.asarray(limit.max)).tolist())
        else:
            limit.set(min(float(value), float(limit.max)))


def settled_start(robot, timeout_s: float = 10.0, tolerance_rad: float = 1e-5) -> np.ndarray:
    """(7,) joints (rad) the next motion starts from, once the idle arm has settled (at most ``timeout_s``).

    franky-sim's arm sags a few mrad after a move ends, and a new motion starts from where the arm is (``q_d``).
    """
    q = np.asarray(robot.state.q_d, dtype=np.float64)
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        time.sleep(0.05)
        q_next = np.asarray(robot.state.q_d, dtype=np.float64)
        if float(np.abs(q_next - q).max()) < tolerance_rad:
            return q_next
        q = q_next
    return q


@dataclass(frozen=True)
class ChainRecord:
    """Every 1 kHz command of a chain, in robot-time order.

    Attributes:
        robot_time_s: (N,) robot clock of each command (s).
        command: (N, 7) commanded joints (rad) for joint motions, (N, 3) commanded TCP position (m) for Cartesian ones.
        motion: (N,) index of the motion in the chain that computed it.
    """

    robot_time_s: np.ndarray
    command: np.ndarray
    motion: np.ndarray


def _command(signal) -> np.ndarray:
    return np.array(signal.q) if hasattr(signal, "q") else np.array(signal.O_T_EE)[12:15]


def record_chain(robot, motions: Sequence, after_s: Sequence[float], until_s: float,
                 reaction_type: Callable | None = None) -> ChainRecord:
    """Run ``motions`` as one chain: motion ``k`` is replaced by ``k + 1`` after ``after_s[k]`` s of its robot time.

    Starts the first motion asynchronously, waits until the recorded commands span ``until_s`` of robot time (at most
    :data:`GIVE_UP_S` of wall time), then stops the robot (libfranka's stop: the move ends as "preempted").

    Args:
        robot: A connected ``franky.Robot`` at rest.
        motions: The franky motions (all joint, or all Cartesian); callbacks and reactions are added to them.
        after_s: ``len(motions) - 1`` robot times (s), one per replacement.
        until_s: Robot time (s) the recording must span before the robot is stopped.
        reaction_type: The franky reaction class; None = ``JointPositionReaction`` for joint motions,
            ``CartesianPoseReaction`` otherwise.
    """
    import franky

    if len(after_s) != len(motions) - 1:
        raise ValueError(f"record_chain needs len(motions) - 1 = {len(motions) - 1} replacement times, "
                         f"got {len(after_s)}")
    if reaction_type is None:
        joint = isinstance(motions[0], franky.JointWaypointMotion)
        reaction_type = franky.JointPositionReaction if joint else franky.CartesianPoseReaction
    rows: list[tuple[float, np.ndarray, int]] = []
    lock = threading.Lock()

    def log(index: int):
        def callback(state, dt, rel, abs_time, signal) -> None:
            command = _command(signal)
            with lock:
                rows.append((abs_time.to_sec(), command, index))
        return callback

    for k, motion in enumerate(motions):
        motion.register_callback(log(k))
        if k + 1 < len(motions):
            motion.add_reaction(reaction_type(franky.Measure.REL_TIME >= after_s[k], motions[k + 1]))
    robot.move(motions[0], asynchronous=True)
    give_up = time.monotonic() + GIVE_UP_S  # only against a hang; nothing is asserted on it
    while time.monotonic() < give_up:
        with lock:
            if rows and rows[-1][0] - rows[0][0] >= until_s:
                break
        time.sleep(0.01)
    robot.stop()
    try:
        robot.join_motion(5.0)
    except franky.ControlException:
        pass  # libfranka's stop ends the move as "preempted"
    with lock:
        ordered = sorted(rows, key=lambda r: r[0])
    return ChainRecord(np.array([r[0] for r in ordered]), np.array([r[1] for r in ordered]),
                       np.array([r[2] for r in ordered], dtype=int))


def velocity_steps(t: np.ndarray, command: np.ndarray, norm: str) -> np.ndarray:
    """Velocity change between consecutive 1 kHz commands, per command (N - 2,).

    ``norm``: ``"max"`` (largest per component, joints) or ``"l2"`` (Euclidean, TCP positions). Zero unless three
    commands come exactly 1 ms apart: after a missed tick franky extrapolates the robot's motion.
    """
    if norm not in ("max", "l2"):
        raise ValueError(f"velocity_steps norm must be one of ('max', 'l2'), got {norm!r}")
    dt = np.diff(t)
    v = np.diff(command, axis=0) / dt[:, None]
    dv = np.diff(v, axis=0)
    size = np.max(np.abs(dv), axis=1) if norm == "max" else np.linalg.norm(dv, axis=1)
    one_ms = np.abs(dt - 1e-3) < 2e-4
    return np.where(one_ms[1:] & one_ms[:-1], size, 0.0)
