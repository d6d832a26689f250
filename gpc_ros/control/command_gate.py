"""The one place where franky motions are built: every target passes the envelope and the joint-space check.

Nothing else in gpc_ros constructs a ``franky`` motion (a test checks this), so "no command that leaves the
envelope reaches the arm" reduces to: every motion :class:`CommandGate` returns satisfies the envelope relative
to the previous one. The gate remembers the last command it issued; :meth:`reset_to` seeds it from the measured
joints after a connect, stop or recovery.

Streaming modes (``ExecutorConfig.streaming_mode``):

- ``velocity`` (default): the same checked joint vectors, but the arm gets a joint *velocity* each period
  (``JointVelocityWaypointMotion``): the checked slope towards the next checked joint vector plus a proportional
  correction of the measured arm's distance from the current one, itself limited (joint speed, TCP speed and
  turn rate through the Jacobian, joint and TCP acceleration per period). franky starts a preempting velocity
  motion from the previous motion's last *commanded* velocity, so the 1 kHz command stream has no velocity
  step at a preemption (position motions restart from the robot's reported ``dq_d``; franky-sim reports a
  low-passed finite difference there, which left 15-20x the bound at every preemption). Each velocity is held for
  ``velocity_hold_periods`` control periods after it is reached, then the motion ramps to zero by itself: a host
  that stops sending brings the arm to rest.
- ``joint``: every target (pose or joint) becomes a checked joint vector
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
STREAMING_MODES: tuple[str, ...] = ("velocity", "joint", "cartesian")


#: ``velocity`` mode: share of the acceleration limits the host gives each command's change of velocity. franky
#: ramps every joint from the robot's reported acceleration (``ddq_d``) to the new velocity in the same time, so
#: the joints' ramps are not exactly proportional and the TCP acceleration can exceed ``J dv / ramp`` a little
#: (measured up to 1.13x on franky-sim, whose ``ddq_d`` is a low-passed finite difference); the rest is that margin.
VELOCITY_ACCELERATION_SHARE = 0.8


def _duration(seconds: float):
    """A franky Duration (whole milliseconds, at least 1)."""
    return franky.Duration(max(1, int(round(seconds * 1000.0))))


class CommandGate:
    """Builds franky streaming motions from targets: Cartesian clamp, IK, joint-space check, then the motion."""

    def __init__(self, envelope: SafetyEnvelope, guard: JointSpaceGuard, streaming_mode: str = "velocity",
                 tracking_gain_per_s: float = 10.0, hold_periods: float = 2.0,
                 ramp_time_s: float | None = None) -> None:
        if streaming_mode not in STREAMING_MODES:
            raise ValueError(f"streaming_mode must be one of {STREAMING_MODES}, got {streaming_mode!r}")
        self.envelope = envelope
        self.guard = guard
        self.streaming_mode = streaming_mode
        self.tracking_gain_per_s = float(tracking_gain_per_s)
        self.hold_periods = float(hold_periods)
        self.ramp_time_s = ramp_time_s
        """``velocity`` mode: each motion reaches its velocity in this time (s; None = the period given per call).
        The executor sets it shorter than the least robot time between two commands, so a motion has reached its
        velocity before the next one preempts it: the robot's commanded velocity is then known exactly."""
        self._last: JointCommand | None = None
        self._last_velocity = np.zeros(7)
        self._ramp_start = np.zeros(7)
        self._ramp_s = 1.0
        self.last_velocity_command_rad_s: np.ndarray = np.zeros(7)
        """(7,) the joint velocity of the last ``velocity`` motion built (rad/s), zeros after :meth:`reset_to`."""
        self.motions_built = 0

    # -- state ----------------------------------------------------------------------------------------------------
    def reset_to(self, joints_rad: np.ndarray) -> None:
        """Forget previous commands: the next one is limited relative to these measured joints, at rest."""
        self._last = self.guard.seed(joints_rad)
        self.at_rest()
        self.last_velocity_command_rad_s = np.zeros(7)

    def at_rest(self) -> None:
        """The arm's commanded velocity is zero again (a ``velocity`` motion ramped down on its own)."""
        self._last_velocity = np.zeros(7)
        self._ramp_start = np.zeros(7)
        self._ramp_s = 1.0

    def commanded_velocity_now(self, elapsed_s: float) -> np.ndarray:
        """(7,) velocity (rad/s) the last ``velocity`` motion has reached ``elapsed_s`` after it was sent.

        Each motion ramps linearly from where the previous one was preempted to its target over its minimum time;
        franky preempts it from its last *commanded* velocity, which is what this models (the next command is
        then limited from there, not from a target the robot may not have reached yet).
        """
        fraction = min(1.0, max(0.0, elapsed_s) / self._ramp_s)
        return self._ramp_start + fraction * (self._last_velocity - self._ramp_start)

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
                    velocity_m_s: np.ndarray | None = None,
                    measured_joints_rad: np.ndarray | None = None) -> tuple[object, JointCommand]:
        """A streaming motion (holds its target, returns at once) towards the checked pose target.

        ``measured_joints_rad`` (the arm's measured joints) feeds the ``velocity`` mode's tracking correction.

        Raises ChunkRejectedError for a non-finite target (nothing is built) and RuntimeError if not seeded.
        """
        last = self._require_seed()
        clamped = self.envelope.clamp_cartesian(position_m, quaternion_xyzw, last.tcp, period_s, velocity_m_s)
        cmd = self.guard.pose_command(clamped, last, period_s)
        ff = float(np.linalg.norm(clamped.velocity_m_s))
        moved = float(np.linalg.norm(cmd.tcp.step_velocity_m_s))
        scale = 0.0 if moved < 1e-9 else min(1.0, ff / moved)
        return self._motion(cmd, scale, last, period_s, measured_joints_rad), cmd

    #: Older name of :meth:`pose_motion`.
    cartesian_motion = pose_motion

    def joint_motion(self, joints_rad: np.ndarray, period_s: float, velocity_rad_s: np.ndarray | None = None,
                     measured_joints_rad: np.ndarray | None = None) -> tuple[object, JointCommand]:
        """A streaming motion towards the checked joint target.

        Args:
            joints_rad: (7,) joint target (rad).
            period_s: Control period the per-command limits are computed for (s).
            velocity_rad_s: Optional (7,) plan slope (rad/s) used as feed-forward; None = stop at the target.
            measured_joints_rad: Optional (7,) measured joints (rad) for the ``velocity`` mode's tracking correction.

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
        return self._motion(cmd, scale, last, period_s, measured_joints_rad), cmd

    def velocity_command(self, cmd: JointCommand, previous: JointCommand, period_s: float,
                         measured_joints_rad: np.ndarray | None) -> np.ndarray:
        """The joint velocity (rad/s) that takes the arm along the checked step ``previous -> cmd``.

        It is the step's slope plus ``tracking_gain_per_s`` times the measured arm's distance from ``previous``
        (where the arm should be now), then limited: joint speed ``max_joint_speed_rad_s``, TCP speed
        ``max_speed_m_s`` and turn rate ``max_rotation_speed_rad_s`` (Jacobian at the checked target), and the
        change from the velocity the last command has reached by now (:meth:`commanded_velocity_now`) per
        period: joint ``max_joint_acceleration_rad_s2``, TCP
        ``max_acceleration_m_s2`` and ``max_rotation_acceleration_rad_s2``. Both limit sets are convex and the last
        command satisfied them, so the result satisfies all of them (counted ``clamped_velocity_speed`` /
        ``clamped_velocity_acceleration``).
        """
        c = self.envelope.config
        v = cmd.joint_velocities_rad_s.astype(np.float64).copy()
        if measured_joints_rad is not None:
            q_meas = np.asarray(measured_joints_rad, dtype=np.float64)
            if q_meas.shape == (7,) and np.all(np.isfinite(q_meas)):
                v = v + self.tracking_gain_per_s * (previous.joint_positions_rad - q_meas)
        jac = self.guard.kinematics.jacobian(cmd.joint_positions_rad)
        lin, ang = jac[:3], jac[3:]

        def over(x: np.ndarray, joint: float, linear: float, angular: float) -> float:
            return max(float(np.abs(x).max()) / joint, float(np.linalg.norm(lin @ x)) / linear,
                       float(np.linalg.norm(ang @ x)) / angular)

        ratio = over(v, c.max_joint_speed_rad_s, c.max_speed_m_s, c.max_rotation_speed_rad_s)
        if ratio > 1.0:
            self.guard.counter.add("clamped_velocity_speed")
            v = v / ratio
        base = self.commanded_velocity_now(period_s)
        dv = v - base
        ramp = self._ramp_for(period_s) * VELOCITY_ACCELERATION_SHARE
        ratio = over(dv, c.max_joint_acceleration_rad_s2 * ramp, c.max_acceleration_m_s2 * ramp,
                     c.max_rotation_acceleration_rad_s2 * ramp)
        if ratio > 1.0:
            self.guard.counter.add("clamped_velocity_acceleration")
            dv = dv / ratio
        return base + dv

    def _ramp_for(self, period_s: float) -> float:
        return max(1e-3, min(period_s, self.ramp_time_s) if self.ramp_time_s else period_s)

    def _motion(self, cmd: JointCommand, feed_forward_scale: float, previous: JointCommand | None = None,
                period_s: float | None = None, measured_joints_rad: np.ndarray | None = None):
        self._last = cmd
        self.motions_built += 1
        if self.streaming_mode == "velocity":
            period = float(period_s) if period_s else 0.02
            v = self.velocity_command(cmd, previous if previous is not None else cmd, period, measured_joints_rad)
            ramp = self._ramp_for(period)
            self._ramp_start = self.commanded_velocity_now(period)
            self._ramp_s = round(ramp * 1000.0) / 1000.0 or 1e-3  # what franky gets (whole ms)
            self._last_velocity = v
            self.last_velocity_command_rad_s = v.copy()
            # Reach v over the ramp time (minimum_time: the change is spread, not taken at the joint limits), hold
            # it for hold_periods, then ramp to zero on its own (a silent host stops the arm).
            waypoints = [franky.JointVelocityWaypoint(v.astype(np.float64), minimum_time=_duration(ramp),
                                                      hold_target_duration=_duration(self.hold_periods * period)),
                         franky.JointVelocityWaypoint(np.zeros(7))]
            return franky.JointVelocityWaypointMotion(waypoints)
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
        """Franky's planned stop for the streaming mode.

        ``JointVelocityStopMotion`` (``velocity``), ``JointStopMotion`` (``joint``), ``CartesianStopMotion``
        (``cartesian``). It decelerates within the robot's acceleration and jerk limits (set from the envelope)
        scaled by ``relative_dynamics_factor`` (in (0, 1]).
        """
        factor = franky.RelativeDynamicsFactor(relative_dynamics_factor, relative_dynamics_factor,
                                               relative_dynamics_factor)
        self.motions_built += 1
        self.at_rest()
        if self.streaming_mode == "velocity":
            return franky.JointVelocityStopMotion(factor)
        if self.streaming_mode == "joint":
            return franky.JointStopMotion(factor)
        return franky.CartesianStopMotion(factor)
