"""The one place where franky motions are built: every target passes the safety envelope on its way to franky.

Nothing else in gpc_ros constructs a ``franky`` motion (a test checks this), so "no command that leaves the
envelope reaches the arm" reduces to: every motion :class:`CommandGate` returns satisfies the envelope relative
to the previous one. The gate remembers the last command it issued; :meth:`reset_to` seeds it from the measured
state after a connect, stop or recovery.
"""

from __future__ import annotations

import numpy as np

import franky

from gpc_ros.control.envelope import CartesianCommand, SafetyEnvelope


class CommandGate:
    """Builds franky streaming motions from targets, clamped by the envelope."""

    def __init__(self, envelope: SafetyEnvelope) -> None:
        self.envelope = envelope
        self._last_cartesian: CartesianCommand | None = None
        self._last_joints_rad: np.ndarray | None = None
        self.motions_built = 0

    # -- state ----------------------------------------------------------------------------------------------------
    def reset_to(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray, joints_rad: np.ndarray) -> None:
        """Forget previous commands: the next one is limited relative to this measured state."""
        q = np.asarray(quaternion_xyzw, dtype=np.float64)
        self._last_cartesian = CartesianCommand(np.asarray(position_m, dtype=np.float64).copy(),
                                                q / np.linalg.norm(q), np.zeros(3))
        self._last_joints_rad = np.asarray(joints_rad, dtype=np.float64).copy()

    @property
    def last_cartesian(self) -> CartesianCommand | None:
        """The last end-effector command issued (or the seed from :meth:`reset_to`)."""
        return self._last_cartesian

    @property
    def last_joints_rad(self) -> np.ndarray | None:
        return None if self._last_joints_rad is None else self._last_joints_rad.copy()

    # -- motions --------------------------------------------------------------------------------------------------
    def cartesian_motion(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray, period_s: float,
                         velocity_m_s: np.ndarray | None = None) -> tuple[franky.CartesianWaypointMotion,
                                                                          CartesianCommand]:
        """A streaming motion (holds its target, returns at once) towards the clamped target.

        Raises ChunkRejected for a non-finite target (nothing is built) and RuntimeError if not seeded.
        """
        if self._last_cartesian is None:
            raise RuntimeError("CommandGate.reset_to must be called with the measured state before commanding")
        cmd = self.envelope.clamp_cartesian(position_m, quaternion_xyzw, self._last_cartesian, period_s,
                                            velocity_m_s)
        state = franky.CartesianState(
            franky.RobotPose(franky.Affine(cmd.position_m.astype(np.float64), cmd.quaternion_xyzw.astype(np.float64))),
            franky.RobotVelocity(franky.Twist(cmd.velocity_m_s.astype(np.float64), np.zeros(3))),
        )
        motion = franky.CartesianWaypointMotion([franky.CartesianWaypoint(state)], return_when_finished=False)
        self._last_cartesian = cmd
        self.motions_built += 1
        return motion, cmd

    def joint_motion(self, joints_rad: np.ndarray, period_s: float) -> tuple[franky.JointWaypointMotion, np.ndarray]:
        """A streaming joint motion towards the clamped joint target."""
        if self._last_joints_rad is None:
            raise RuntimeError("CommandGate.reset_to must be called with the measured state before commanding")
        q = self.envelope.clamp_joints(joints_rad, self._last_joints_rad, period_s)
        motion = franky.JointWaypointMotion([franky.JointWaypoint(q.astype(np.float64))], return_when_finished=False)
        self._last_joints_rad = q
        self.motions_built += 1
        return motion, q

    def hold_motion(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray) -> franky.CartesianWaypointMotion:
        """Hold the measured pose (used by the watchdog and to re-anchor after a stop)."""
        self.reset_to(position_m, quaternion_xyzw, self._last_joints_rad if self._last_joints_rad is not None
                      else np.zeros(7))
        cmd = self._last_cartesian
        assert cmd is not None
        self.motions_built += 1
        return franky.CartesianWaypointMotion(
            [franky.CartesianWaypoint(franky.RobotPose(franky.Affine(cmd.position_m, cmd.quaternion_xyzw)))],
            return_when_finished=False)
