"""The one place where franky motions are built: every target passes the envelope and the joint-space check.

Nothing else in gpc_ros constructs a ``franky`` motion (a test checks this), so "no command that leaves the
envelope reaches the arm" reduces to: every motion :class:`CommandGate` returns satisfies the envelope relative
to the previous one. The gate remembers the last command it issued; :meth:`reset_to` seeds it from the measured
joints after a connect, stop or recovery.

Streaming modes (``ExecutorConfig.streaming_mode``):

- ``joint`` (default): every target (pose or joint) becomes a checked joint vector
  (:class:`~gpc_ros.control.joint_guard.JointSpaceGuard`) sent as a ``JointWaypointMotion`` with a feed-forward
  joint velocity. The arm is asked for exactly the joint vector that was checked.
- ``cartesian``: the same checked joint vector, but sent as its FK pose in a ``CartesianWaypointMotion`` (the
  robot's own IK then chooses the joints; franky-sim's resolved-rate controller can drift in the null space).
"""

from __future__ import annotations

import franky
import numpy as np

from gpc_ros.control.envelope import CartesianCommand, SafetyEnvelope
from gpc_ros.control.joint_guard import JointCommand, JointSpaceGuard

#: Streaming modes (ExecutorConfig.streaming_mode).
STREAMING_MODES: tuple[str, ...] = ("joint", "cartesian")


class CommandGate:
    """Builds franky streaming motions from targets: Cartesian clamp, IK, joint-space check, then the motion."""

    def __init__(self, envelope: SafetyEnvelope, guard: JointSpaceGuard, streaming_mode: str = "joint") -> None:
        if streaming_mode not in STREAMING_MODES:
            raise ValueError(f"streaming_mode must be one of {STREAMING_MODES}, got {streaming_mode!r}")
        self.envelope = envelope
        self.guard = guard
        self.streaming_mode = streaming_mode
        self._last: JointCommand | None = None
        self.motions_built = 0

    # -- state ----------------------------------------------------------------------------------------------------
    def reset_to(self, joints_rad: np.ndarray) -> None:
        """Forget previous commands: the next one is limited relative to these measured joints, at rest."""
        self._last = self.guard.seed(joints_rad)

    @property
    def last(self) -> JointCommand | None:
        """The last command issued (or the seed from :meth:`reset_to`)."""
        return self._last

    @property
    def last_cartesian(self) -> CartesianCommand | None:
        """TCP of the last command issued."""
        return None if self._last is None else self._last.tcp

    @property
    def last_joints_rad(self) -> np.ndarray | None:
        """(7,) joints of the last command issued (rad, a copy), None before the gate is seeded."""
        return None if self._last is None else self._last.joint_positions_rad.copy()

    def _require_seed(self) -> JointCommand:
        if self._last is None:
            raise RuntimeError("CommandGate.reset_to must be called with the measured joints before commanding")
        return self._last

    # -- motions --------------------------------------------------------------------------------------------------
    def pose_motion(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray, period_s: float,
                    velocity_m_s: np.ndarray | None = None) -> tuple[object, JointCommand]:
        """A streaming motion (holds its target, returns at once) towards the checked pose target.

        Raises ChunkRejectedError for a non-finite target (nothing is built) and RuntimeError if not seeded.
        """
        last = self._require_seed()
        clamped = self.envelope.clamp_cartesian(position_m, quaternion_xyzw, last.tcp, period_s, velocity_m_s)
        cmd = self.guard.pose_command(clamped, last, period_s)
        ff = float(np.linalg.norm(clamped.velocity_m_s))
        moved = float(np.linalg.norm(cmd.tcp.step_velocity_m_s))
        scale = 0.0 if moved < 1e-9 else min(1.0, ff / moved)
        return self._motion(cmd, scale), cmd

    #: Older name of :meth:`pose_motion`.
    cartesian_motion = pose_motion

    def joint_motion(self, joints_rad: np.ndarray, period_s: float,
                     velocity_rad_s: np.ndarray | None = None) -> tuple[object, JointCommand]:
        """A streaming motion towards the checked joint target.

        Args:
            joints_rad: (7,) joint target (rad).
            period_s: Control period the per-command limits are computed for (s).
            velocity_rad_s: Optional (7,) plan slope (rad/s) used as feed-forward; None = stop at the target.

        Returns:
            The franky motion and the checked command it encodes.

        Raises:
            ChunkRejectedError: the target is not 7 finite values (nothing is built).
            RuntimeError: the gate was not seeded with :meth:`reset_to`.
        """
        last = self._require_seed()
        q = np.asarray(joints_rad, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            from gpc_ros.control.chunk import ChunkRejectedError

            raise ChunkRejectedError(f"a joint command needs 7 finite values (rad), got {q!r}")
        cmd = self.guard.joint_command(q, last, period_s)
        scale = 0.0
        if velocity_rad_s is not None and np.all(np.isfinite(velocity_rad_s)):
            moved = float(np.abs(cmd.joint_velocities_rad_s).max())
            scale = 0.0 if moved < 1e-9 else min(1.0, float(np.abs(velocity_rad_s).max()) / moved)
        return self._motion(cmd, scale), cmd

    def _motion(self, cmd: JointCommand, feed_forward_scale: float):
        self._last = cmd
        self.motions_built += 1
        if self.streaming_mode == "joint":
            qd = cmd.joint_velocities_rad_s * feed_forward_scale
            state = franky.JointState(cmd.joint_positions_rad.astype(np.float64), qd.astype(np.float64))
            return franky.JointWaypointMotion([franky.JointWaypoint(state)], return_when_finished=False)
        tcp = cmd.tcp
        v = tcp.step_velocity_m_s * feed_forward_scale
        state = franky.CartesianState(
            franky.RobotPose(franky.Affine(tcp.position_m.astype(np.float64), tcp.quaternion_xyzw.astype(np.float64))),
            franky.RobotVelocity(franky.Twist(v.astype(np.float64), np.zeros(3))),
        )
        return franky.CartesianWaypointMotion([franky.CartesianWaypoint(state)], return_when_finished=False)

    def stop_motion(self, relative_dynamics_factor: float = 1.0):
        """Franky's planned stop for the streaming mode (``JointStopMotion`` / ``CartesianStopMotion``).

        It decelerates within the robot's acceleration and jerk limits (set from the envelope) scaled by
        ``relative_dynamics_factor`` (in (0, 1]).
        """
        factor = franky.RelativeDynamicsFactor(relative_dynamics_factor, relative_dynamics_factor,
                                               relative_dynamics_factor)
        self.motions_built += 1
        if self.streaming_mode == "joint":
            return franky.JointStopMotion(factor)
        return franky.CartesianStopMotion(factor)
