"""The one place where franky motions are built: every target passes the envelope and the joint-space check.

Nothing else in gpc_ros constructs a ``franky`` motion (a test checks this), so "no command that leaves the
envelope reaches the arm" reduces to: every motion :class:`CommandGate` returns satisfies the envelope relative
to the previous one. The gate remembers the last command it issued; :meth:`reset_to` seeds it from the measured
joints after a connect, stop or recovery.

Streaming modes (``ExecutorConfig.streaming_mode``):

- ``joint`` (default): every target (pose or joint) becomes a checked joint vector
  (:class:`~gpc_ros.control.joint_guard.JointSpaceGuard`) sent as a ``JointWaypointMotion`` with a feed-forward
  joint velocity. The arm is asked for exactly the joint vector that was checked. franky plans each motion
  time-optimally up to its joint velocity limit, which says nothing about the TCP: catching up with a target it lags
  behind, it ran the joints at 1 rad/s and the TCP at up to 1.9x ``max_speed_m_s``. Each motion therefore gets its
  own velocity factor (:meth:`CommandGate.joint_speed_factor`): the joint speed at which moving from where the robot
  is commanded now towards the target keeps the TCP within ``max_speed_m_s`` and ``max_rotation_speed_rad_s``.
- ``cartesian``: the same checked joint vector, but sent as its FK pose in a ``CartesianWaypointMotion`` (the
  robot's own IK then chooses the joints; franky-sim's resolved-rate controller can drift in the null space).
"""

from __future__ import annotations

import dataclasses

import franky
import numpy as np

from gpc_ros.control.braking import BrakingEnvelope
from gpc_ros.control.envelope import CartesianCommand, SafetyEnvelope
from gpc_ros.control.joint_guard import JointCommand, JointSpaceGuard

#: Streaming modes (ExecutorConfig.streaming_mode).
STREAMING_MODES: tuple[str, ...] = ("joint", "cartesian")
#: Dynamics of the last waypoint of a streamed motion, the target at rest (:meth:`CommandGate._motion`): the robot's
#: limits, each axis braking on its own (franky's ``TimeIfNecessary`` synchronisation). Time-synchronised like the
#: first waypoint, franky's planner failed now and then (``Motion planner failed with error code -111``, Ruckig's
#: synchronisation error: 1 of 6 e-stop run-ups).
BRAKE_TO_REST = franky.RelativeDynamicsFactor.MAX_DYNAMICS
#: The per-motion acceleration factor never lets a joint's acceleration limit fall below this x
#: ``braking_deceleration_rad_s2`` (:meth:`CommandGate.joint_dynamics_factors`): measured (bench/braking_probe.py,
#: franky-sim), franky's planner brakes a joint at a mean 0.87-0.90 x its acceleration limit (jerk ramps, libfranka's
#: 100 Hz command low-pass), so at 1.0 x the braking envelope's deceleration would be 10-13 % optimistic.
BRAKING_FLOOR_MARGIN = 1.25
#: Share of a joint's per-motion acceleration limit the feed-forward's uniform acceleration may use
#: (:meth:`CommandGate._consistent_feed_forward`); the rest is left for the planner's jerk-limited corners.
FEED_FORWARD_ACCELERATION_SHARE = 0.8
#: Durations (s) among which :meth:`CommandGate._consistent_feed_forward` picks the one the joints arrive in.
FEED_FORWARD_DURATIONS_S = np.geomspace(1e-3, 1.0, 400)
#: A joint whose consistent feed-forward turns it around further than this (rad) past where it starts makes the
#: motion fall back to the reachable feed-forward, planned time-optimally
#: (:meth:`CommandGate._consistent_feed_forward`).
TURN_TOLERANCE_RAD = 1e-4
#: A start velocity above this x franky's joint velocity limit is not one the planner commanded
#: (:meth:`CommandGate._motion` brakes it at franky's full acceleration and jerk).
SPURIOUS_SPEED_RATIO = 1.1
#: A start whose largest brakeable scale inside the boxes themselves (``CommandGate.fallback_braking``) is below this
#: brakes harder than the per-motion factors (:meth:`CommandGate._motion`,
#: :meth:`CommandGate.braking_dynamics_factors`; at franky's full limits, and against the boxes shrunk by
#: ``braking_margin_m``, until session 18). The per-motion factors brake at no less than ``BRAKING_FLOOR_MARGIN`` x
#: ``braking_deceleration_rad_s2``, so a start up to ``1 / sqrt(BRAKING_FLOOR_MARGIN)`` x its brakeable speed still
#: stops in the room at them (the lag aside). At 1.0 it fired at walls an arm came to at its brakeable speed
#: (bisection rounding): in one bench/bench_driver.py run a 10 Hz line's largest 1 kHz TCP velocity step was 1.18 x
#: its bound and the joint step 1.00 x (franky's full 5 rad/s^2), against 1.12 / 0.42 before the change and
#: 0.97 / 0.43 with this threshold (results/driver/bench_driver_2026-12-03_s13_*.txt).
FULL_BRAKING_SCALE = 1.0 / np.sqrt(BRAKING_FLOOR_MARGIN)
#: A start whose TCP speed (the robot's ``dq_d`` through the Jacobian at its ``q_d``) is above this x
#: ``max_speed_m_s`` / ``max_rotation_speed_rad_s`` is braked harder than the per-motion factors
#: (:meth:`CommandGate.braking_dynamics_factors`; franky's full limits until session 18; :meth:`CommandGate._motion`,
#: counted as ``harder_braking_overspeed``). The speed factor bounds the TCP speed along two directions per motion; a
#: time-optimal profile slows its joints at different times. Recorded (issue 9, session 15, the 200 adversarial
#: streams, seed 23): joint 4 held 0.64 rad/s while joints 2 and 6, which had partly cancelled its TCP motion, slowed;
#: the commanded TCP went to 1.03-1.07 x the limit for ~100 ms while the lowered factor braked joint 4 at the
#: per-motion 1.25 rad/s^2.
OVERSPEED_FULL_BRAKING_RATIO = 1.02
#: Smallest per-motion velocity factor (franky needs one in (0, 1]); 0.02 x 1 rad/s is far below any TCP limit.
MIN_SPEED_FACTOR = 0.02


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
        self.last_speed_factor = 1.0
        """Velocity factor of the last joint motion built (:meth:`joint_speed_factor`)."""
        self.last_target_velocity_rad_s = np.zeros(7)
        """Target velocity of the last joint motion built (rad/s): the feed-forward after scaling to the limit."""
        self.planner_joint_velocity_limit_rad_s = np.full(7, envelope.config.max_joint_speed_rad_s)
        """(7,) franky's joint velocity limits (rad/s): ``max_joint_speed_rad_s`` capped by franky's maxima; the
        executor sets the values it read back from the robot."""
        self.planner_joint_acceleration_limit_rad_s2 = np.full(7, envelope.config.max_joint_acceleration_rad_s2)
        """(7,) franky's joint acceleration limits (rad/s^2), as above (:meth:`joint_dynamics_factors`)."""
        self.planner_joint_jerk_limit_rad_s3 = np.full(7, envelope.config.max_joint_jerk_rad_s3)
        """(7,) franky's joint jerk limits (rad/s^3), as above."""
        self.last_arrival_s: float | None = None
        """Duration (s) the last joint motion's first waypoint takes at least (:meth:`_consistent_feed_forward`)."""
        self.last_dynamics_factors = (1.0, 1.0)
        """(acceleration, jerk) factors of the last joint motion built (:meth:`joint_dynamics_factors`)."""
        self.braking = BrakingEnvelope(envelope.config, guard.kinematics, guard.hard_lower_rad, guard.hard_upper_rad)
        """Limits the planner's speed to what can stop inside the boxes and joint limits (:mod:`.braking`)."""
        self.fallback_braking = BrakingEnvelope(dataclasses.replace(envelope.config, braking_margin_m=0.0),
                                                guard.kinematics, guard.hard_lower_rad, guard.hard_upper_rad)
        """The same, stopping inside the boxes themselves: an arm that cannot brakes harder (:meth:`_motion`)."""
        self.last_braking: str | None = None
        """Why the last joint motion brakes harder than its per-motion factors: ``"braking"``, ``"overspeed"``,
        ``"spurious"`` (franky's full limits), or None."""

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
                    velocity_m_s: np.ndarray | None = None, robot_joints_rad: np.ndarray | None = None,
                    robot_joint_velocities_rad_s: np.ndarray | None = None,
                    arrival_s: float | None = None) -> tuple[object, JointCommand]:
        """A streaming motion (holds its target, returns at once) towards the checked pose target.

        ``robot_joints_rad`` / ``robot_joint_velocities_rad_s`` (7,): the joints and joint velocities the robot is
        commanded at now (``q_d``, ``dq_d``), where franky's planner starts from; None = the last command, at rest
        (:meth:`joint_speed_factor`). ``arrival_s``: time (s) until the target is due (joint streaming: the motion
        arrives no earlier, :meth:`_consistent_feed_forward`); None = as soon as the planner can. Raises
        ChunkRejectedError for a non-finite target (nothing is built) and RuntimeError if not seeded.
        """
        last = self._require_seed()
        clamped = self.envelope.clamp_cartesian(position_m, quaternion_xyzw, last.tcp, period_s, velocity_m_s)
        cmd = self.guard.pose_command(clamped, last, period_s)
        ff = float(np.linalg.norm(clamped.velocity_m_s))
        moved = float(np.linalg.norm(cmd.tcp.step_velocity_m_s))
        scale = 0.0 if moved < 1e-9 else min(1.0, ff / moved)
        return self._motion(cmd, scale, robot_joints_rad, robot_joint_velocities_rad_s, arrival_s), cmd

    #: Older name of :meth:`pose_motion`.
    cartesian_motion = pose_motion

    def joint_motion(self, joints_rad: np.ndarray, period_s: float, velocity_rad_s: np.ndarray | None = None,
                     robot_joints_rad: np.ndarray | None = None,
                     robot_joint_velocities_rad_s: np.ndarray | None = None,
                     arrival_s: float | None = None) -> tuple[object, JointCommand]:
        """A streaming motion towards the checked joint target.

        Args:
            joints_rad: (7,) joint target (rad).
            period_s: Control period the per-command limits are computed for (s).
            velocity_rad_s: Optional (7,) plan slope (rad/s) used as feed-forward; None = stop at the target.
            robot_joints_rad: Optional (7,) joints the robot is commanded at now (``q_d``); None = the last command.
            robot_joint_velocities_rad_s: Optional (7,) its commanded joint velocities (``dq_d``); None = at rest.
            arrival_s: Optional time (s) until the target is due: the motion arrives no earlier
                (:meth:`_consistent_feed_forward`); None = as soon as the planner can.

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
        return self._motion(cmd, scale, robot_joints_rad, robot_joint_velocities_rad_s, arrival_s), cmd

    def joint_speed_factor(self, target_rad: np.ndarray, start_rad: np.ndarray,
                           start_velocity_rad_s: np.ndarray | None = None) -> float:
        """Fraction of ``max_joint_speed_rad_s`` (franky's joint velocity limit) for a motion ``start -> target``.

        franky's planner runs joint ``i`` at up to ``factor * limit_i`` (``planner_joint_velocity_limit_rad_s``
        times ``relative_dynamics_factor``). Along the joint-space
        direction from ``start_rad`` to ``target_rad``, and along ``start_velocity_rad_s`` (the velocity the planner
        starts with and turns away from), the fastest motion within those joint limits moves the TCP (Jacobian at
        the target) at most ``max_speed_m_s`` and turns it at most ``max_rotation_speed_rad_s``. The fastest
        motion towards the target must be brakeable to rest inside the boxes and joint limits
        (:class:`~gpc_ros.control.braking.BrakingEnvelope`, from ``start_rad``); when ``start_velocity_rad_s`` is not,
        the factor is lowered by the scale that would make it so. In [``MIN_SPEED_FACTOR``, 1]; 1 when there is
        nothing to move.
        """
        c = self.envelope.config
        start = np.asarray(start_rad, dtype=np.float64)
        directions = [np.asarray(target_rad, dtype=np.float64) - start]
        if start_velocity_rad_s is not None:
            directions.append(np.asarray(start_velocity_rad_s, dtype=np.float64))
        limit = self.planner_joint_velocity_limit_rad_s * c.relative_dynamics_factor
        jac = None
        factor = 1.0
        for direction in directions:
            if not np.all(np.isfinite(direction)) or float(np.abs(direction).max()) < 1e-9:
                continue
            if jac is None:
                jac = self.guard.kinematics.jacobian(target_rad)
            fastest = direction * float(np.min(limit / np.maximum(np.abs(direction), 1e-12)))  # at factor 1
            linear = float(np.linalg.norm(jac[:3] @ fastest))
            angular = float(np.linalg.norm(jac[3:] @ fastest))
            factor = min(factor, c.max_speed_m_s / max(linear, 1e-12), c.max_rotation_speed_rad_s / max(angular, 1e-12))
        if jac is not None and float(np.abs(directions[0]).max()) >= 1e-9:
            # The planner's fastest velocity towards the target must be brakeable inside the boxes and joint limits.
            fastest = directions[0] * float(np.min(limit / np.maximum(np.abs(directions[0]), 1e-12)))
            factor = self.braking.brakeable_scale(start, fastest, factor)
        if jac is not None and len(directions) > 1 and np.all(np.isfinite(directions[1])):
            # Already faster than the limits (with franky-sim's own lagging dq_d every motion restarted above a lowered
            # limit for a while; with the exact report after a limit was lowered): aim lower by the same ratio, so the
            # speed settles at it.
            velocity = directions[1]
            over = self._tcp_speed_ratio(jac, velocity)
            # The velocity the planner starts from cannot be braked inside: lower the factor by the scale that could
            # (the planner then decelerates to the lowered limit at its full acceleration).
            over = max(over, 1.0 / max(self.braking.brakeable_scale(start, velocity), 1e-3))
            if over > 1.0:
                factor /= over
        return float(np.clip(factor, MIN_SPEED_FACTOR, 1.0))

    def joint_dynamics_factors(self, joints_rad: np.ndarray) -> tuple[float, float]:
        """Acceleration and jerk factors (franky's ``RelativeDynamicsFactor``) of a joint motion near ``joints_rad``.

        franky's planner moves joint ``i`` with ``|ddq_i| <= f_a * a_i`` (``a_i``: franky's joint acceleration limit
        times ``relative_dynamics_factor``), every joint on its own profile, so the TCP's acceleration
        ``J ddq + dJ dq`` is at most ``f_a * sum_i a_i |J_i|`` plus the velocity term (columns ``J_i`` of the linear,
        resp. angular, Jacobian at ``joints_rad``). ``f_a`` is the largest factor for which that stays within
        ``max_acceleration_m_s2`` and ``max_rotation_acceleration_rad_s2``, but never below ``BRAKING_FLOOR_MARGIN``
        x the braking envelope's ``braking_deceleration_rad_s2`` (the arm must still brake as :mod:`.braking`
        assumes): where the floor binds (at the default limits it always does), the bound is ``floor / f_a`` times
        looser (1.5 x translation, 1.75 x rotation at the FR3's usual poses, whose column sums are 2.4-2.9 m/rad and
        7 rad/rad). The jerk factor is 1 (franky's joint jerk limit, ``max_joint_jerk_rad_s3``): a factor bounding
        ``sum_i j_i |J_i|`` by ``max_jerk_m_s3`` (~0.16 at the defaults, ~800 rad/s^3 per joint) let the planner shed a
        start acceleration above the motion's limit only slowly, gaining ``a^2 / 2j`` on the way (franky starts every
        motion from the reported ``ddq_d``, tens of rad/s^2 for a starved client: docs/driver.md, *A starved
        client*). ``f_a`` in (0, 1].
        """
        return self._acceleration_factor(joints_rad, 1.0), 1.0

    def braking_dynamics_factors(self, joints_rad: np.ndarray) -> tuple[float, float]:
        """Acceleration and jerk factors of a motion that brakes harder than :meth:`joint_dynamics_factors`.

        The largest ``f_a`` at which ``f_a * sum_i a_i |J_i|`` stays within ``braking_acceleration_ratio`` x
        ``max_acceleration_m_s2`` and x ``max_rotation_acceleration_rad_s2`` (the per-motion factor's bound, that
        many times looser), never below the per-motion factor; the jerk factor is 1. In (0, 1].
        """
        return self._acceleration_factor(joints_rad, self.envelope.config.braking_acceleration_ratio), 1.0

    def _acceleration_factor(self, joints_rad: np.ndarray, ratio: float) -> float:
        """The largest ``f_a`` in (0, 1] within ``ratio`` x the TCP acceleration limits, not below the braking floor.

        ``f_a * sum_i a_i |J_i|`` is the bound (:meth:`joint_dynamics_factors`); with ``ratio`` >= 1 the factor is never
        below the per-motion one (ratio 1).
        """
        c = self.envelope.config
        columns = np.abs(self.guard.kinematics.jacobian(joints_rad))
        lin = np.linalg.norm(columns[:3], axis=0)
        ang = np.linalg.norm(columns[3:], axis=0)
        acc = c.relative_dynamics_factor * self.planner_joint_acceleration_limit_rad_s2
        f_acc = min(1.0, ratio * c.max_acceleration_m_s2 / max(float(acc @ lin), 1e-12),
                    ratio * c.max_rotation_acceleration_rad_s2 / max(float(acc @ ang), 1e-12))
        floor = min(1.0, BRAKING_FLOOR_MARGIN * c.braking_deceleration_rad_s2 / max(float(acc.min()), 1e-12))
        return max(f_acc, floor)

    def _consistent_feed_forward(self, velocity_rad_s: np.ndarray, displacement_rad: np.ndarray,
                                 start_velocity_rad_s: np.ndarray | None, acceleration_factor: float,
                                 velocity_limit_rad_s: np.ndarray, arrival_s: float | None = None
                                 ) -> tuple[np.ndarray, float | None]:
        """(7,) the feed-forward joint velocity, and the duration (s) in which every joint arrives with it.

        franky's planner is time-synchronised: every joint arrives at its target, with its feed-forward velocity, at
        the same time. A joint that cannot stop and wait on the way (``v0^2 + v^2 > 2 a d``) can arrive only within a
        window of durations; where the windows of two joints do not overlap, the planner takes the next duration at
        which a joint can loop (pass its target, turn, come back, turn again): every joint then slows down for tens to
        hundreds of ms (or the planner fails, error -111). Measured at the per-motion acceleration of 1.25 rad/s^2
        (:meth:`joint_dynamics_factors`), with targets one control period ahead: the 10 Hz stream of
        test_streamed_chunks_move_without_stop_and_go fell from 0.13 to 0.02 m/s in every run.

        So the velocities are chosen for one duration ``T``: joint ``i`` arrives at ``v_i = 2 d_i / T - v0_i``, the end
        of a uniform acceleration from ``v0_i`` over its displacement ``d_i`` (``v0_i``: where the planner starts) that
        stays within ``FEED_FORWARD_ACCELERATION_SHARE`` of the joint's acceleration (``acceleration_factor`` x
        franky's limit) and within ``velocity_limit_rad_s``. Every joint then has a direct profile of duration ``T``.
        ``T`` is the feasible duration nearest (in ratio) to ``arrival_s`` (when the target is due), else to the
        duration whose velocities best match the plan's (least squares on ``1 / T`` of ``d_i / T`` against
        ``(v0_i + velocity_i) / 2``). On track (``d = v T``, ``v0 = v``) every velocity is the plan's. A joint ahead of
        its target arrives moving back towards it. Without a feed-forward (all zero) the velocities stay zero and the
        duration is ``arrival_s``. A motion in which a joint would turn around (moving one way, arriving the other)
        further than ``TURN_TOLERANCE_RAD`` gets :meth:`_reachable_feed_forward` and no duration instead: its uniform
        deceleration can be far below the planner's, and the joint would pass its target further than braking does.
        """
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        if not np.any(v):
            return v, arrival_s
        d = np.asarray(displacement_rad, dtype=np.float64)
        v0 = np.zeros(7) if start_velocity_rad_s is None else np.asarray(start_velocity_rad_s, dtype=np.float64)
        a = FEED_FORWARD_ACCELERATION_SHARE * acceleration_factor * self.envelope.config.relative_dynamics_factor * \
            self.planner_joint_acceleration_limit_rad_s2
        limit = np.asarray(velocity_limit_rad_s, dtype=np.float64)
        durations = FEED_FORWARD_DURATIONS_S
        ends = 2.0 * d / durations[:, None] - v0  # (K, 7)
        excess = np.maximum(np.abs(ends - v0) / (a * durations[:, None]), np.abs(ends) / limit).max(axis=1)
        if arrival_s is not None and arrival_s > 0.0:
            preferred = float(arrival_s)
        else:
            weight = float(d @ d)
            match = float(d @ (v0 + v)) / (2.0 * weight) if weight > 1e-18 else 0.0  # 1 / T of the best match
            preferred = 1.0 / match if match > 0.0 else float(durations[-1])
        distance = np.abs(np.log(durations / preferred))
        if np.any(excess <= 1.0):
            k = int(np.argmin(np.where(excess <= 1.0, distance, np.inf)))
        else:  # nothing within the limits (a joint starts above its velocity limit): the least excess
            k = int(np.argmin(excess))
        out = np.clip(ends[k], -limit, limit)
        # A joint that turns within the motion would brake only at its uniform deceleration, which can be far below
        # the planner's (measured: joint 4 ramped at its limit overshot into the halt margin under a CPU quota,
        # test_driver_starved.py): such a motion brakes time-optimally, as before.
        turning = v0 * out < 0.0
        excursion = v0 * v0 * durations[k] / np.maximum(2.0 * np.abs(out - v0), 1e-12)
        if np.any(turning & (excursion > TURN_TOLERANCE_RAD)):
            return self._reachable_feed_forward(v, d, start_velocity_rad_s, acceleration_factor), None
        return out, float(durations[k])

    def _reachable_feed_forward(self, velocity_rad_s: np.ndarray, displacement_rad: np.ndarray,
                                start_velocity_rad_s: np.ndarray | None, acceleration_factor: float) -> np.ndarray:
        """(7,) the feed-forward joint velocity, each joint capped at what it reaches over its displacement.

        franky's planner must arrive at the target *with* this velocity. A joint that cannot reach it within its
        displacement at its acceleration (``acceleration_factor`` x franky's limit) is moved *backwards* first to
        gain the run-up: measured, joint 1 ran at -0.08 rad/s away from a target ahead of it, asked for 0.05 rad/s
        0.5 mrad ahead at 1 rad/s^2. So ``|v_i| <= sqrt(v0_i^2 + 2 a_i |d_i|)`` (``v0_i``: the start velocity if it
        points the same way, else 0). A velocity pointing away from the displacement (the arm ahead of its plan) is
        left as it is: the joint has to turn either way, and zeroing it made the arm stop and go (1 of 5 runs of
        test_streamed_chunks_move_without_stop_and_go at 10 Hz, speed down to 0.02-0.04 of 0.11 m/s).
        """
        a = acceleration_factor * self.envelope.config.relative_dynamics_factor * \
            self.planner_joint_acceleration_limit_rad_s2
        d = np.asarray(displacement_rad, dtype=np.float64)
        v0 = np.zeros(7) if start_velocity_rad_s is None else np.asarray(start_velocity_rad_s, dtype=np.float64)
        along = np.where(np.sign(v0) == np.sign(d), np.abs(v0), 0.0)
        reach = np.sqrt(along * along + 2.0 * a * np.abs(d))
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        return np.where(np.sign(v) == np.sign(d), np.sign(v) * np.minimum(np.abs(v), reach), v)

    def _brakeable_when_passing(self, target_rad: np.ndarray, velocity_rad_s: np.ndarray,
                                displacement_rad: np.ndarray) -> np.ndarray:
        """(7,) the feed-forward velocity, scaled down until the arm passing the target is brakeable (counted).

        A joint whose feed-forward points against its displacement (the target ahead, the plan's slope back) must
        pass the target, turn beyond it and come back at that speed: the planner's profile crosses the target the
        *other* way at about the same speed, then brakes. :meth:`BrakingEnvelope.brakeable` of the target with the
        feed-forward itself does not see that excursion. Measured (issue 9, 200 adversarial streams, "outside" kind):
        joint 4 0.10 rad short of its target at +0.34 rad/s, feed-forward -0.46 rad/s; it ran on to +0.44 rad/s,
        then braked at 1.2 rad/s^2, and the commanded TCP went 9.5 mm out of the box (the measured one 8.5 mm).
        So the velocity with those joints mirrored must be brakeable from the target too; else the whole
        feed-forward is scaled by :meth:`BrakingEnvelope.brakeable_scale` of the mirrored one.
        """
        qd = np.asarray(velocity_rad_s, dtype=np.float64)
        turning = qd * np.asarray(displacement_rad, dtype=np.float64) < 0.0
        if not np.any(turning):
            return qd
        passing = np.where(turning, -qd, qd)
        scale = self.braking.brakeable_scale(target_rad, passing)
        if scale >= 1.0:
            return qd
        self.guard.counter.add("scaled_turning_feed_forward")
        return qd * scale

    def _tcp_speed_ratio(self, jacobian: np.ndarray, velocity_rad_s: np.ndarray) -> float:
        """The TCP speed of joints moving at ``velocity_rad_s`` over its limits (``jacobian``: 6 x 7).

        The larger of linear speed / ``max_speed_m_s`` and angular speed / ``max_rotation_speed_rad_s``.
        """
        c = self.envelope.config
        return max(float(np.linalg.norm(jacobian[:3] @ velocity_rad_s)) / c.max_speed_m_s,
                   float(np.linalg.norm(jacobian[3:] @ velocity_rad_s)) / c.max_rotation_speed_rad_s)

    def _overspeed(self, joints_rad: np.ndarray, velocity_rad_s: np.ndarray) -> bool:
        """Whether the start is over the TCP limits by more than :data:`OVERSPEED_FULL_BRAKING_RATIO`.

        That is, whether joints moving at ``velocity_rad_s`` at ``joints_rad`` move or turn the TCP faster than that
        ratio x its limits.
        """
        jac = self.guard.kinematics.jacobian(np.asarray(joints_rad, dtype=np.float64))
        return self._tcp_speed_ratio(jac, np.asarray(velocity_rad_s, dtype=np.float64)) > OVERSPEED_FULL_BRAKING_RATIO

    def _motion(self, cmd: JointCommand, feed_forward_scale: float, robot_joints_rad: np.ndarray | None = None,
                robot_joint_velocities_rad_s: np.ndarray | None = None, arrival_s: float | None = None):
        """The franky motion for ``cmd``: its target with the feed-forward velocity, then the same target at rest.

        Joint streaming: the first waypoint is reached no earlier than the duration
        :meth:`_consistent_feed_forward` chose (its ``minimum_time``), so the planner's time-synchronised profile is
        the direct one of that duration rather than a faster one that reaches the target before the next motion.

        franky's planner is time-optimal and often reaches the target before the next motion replaces it (always when
        the robot's clock runs faster than the executor's). With only the first waypoint franky then *holds* it: the
        1 kHz command stopped dead from full speed within 1 ms (50 x the joint, 75 x the TCP acceleration bound,
        ``test_stream_end_sim.py``) and the next motion started from that stop's acceleration. The second waypoint
        makes the planner brake to rest at the target within the robot's acceleration and jerk limits instead, every
        axis on its own (``BRAKE_TO_REST``); it passes the target by the braking distance, which the braking envelope /
        the Cartesian clamp's braking already allow for.
        """
        previous = self._last
        self._last = cmd
        self.motions_built += 1
        if self.streaming_mode == "joint":
            start = robot_joints_rad if robot_joints_rad is not None and np.all(np.isfinite(robot_joints_rad)) \
                else previous.joint_positions_rad
            velocity = robot_joint_velocities_rad_s if robot_joint_velocities_rad_s is not None and \
                np.all(np.isfinite(robot_joint_velocities_rad_s)) else None
            factor = self.joint_speed_factor(cmd.joint_positions_rad, start, velocity)
            self.last_speed_factor = factor
            qd = cmd.joint_velocities_rad_s * feed_forward_scale
            # franky's planner refuses a target velocity above its (now scaled) limit (error -100): scale it down.
            dynamics = self.envelope.config.relative_dynamics_factor
            allowed = 0.99 * factor * self.planner_joint_velocity_limit_rad_s * dynamics
            over = float(np.max(np.abs(qd) / allowed))
            if over > 1.0:
                qd = qd / over
            q = cmd.joint_positions_rad.astype(np.float64)
            f_acc, f_jerk = self.joint_dynamics_factors(q)
            self.last_braking = None
            if velocity is not None and np.any(np.abs(velocity) > SPURIOUS_SPEED_RATIO * dynamics *
                                               self.planner_joint_velocity_limit_rad_s):
                # A start the planner never commands (franky-sim's report to a starved client): brake it at franky's
                # full limits. At the per-motion factors it took seconds (joint 2 ran away to 11.7 rad/s).
                f_acc, f_jerk = 1.0, 1.0
                self.last_braking = "spurious"
            elif velocity is not None and (f_acc < 1.0 or f_jerk < 1.0) and \
                    self.fallback_braking.brakeable_scale(start, velocity, speeds=False) < FULL_BRAKING_SCALE:
                # The arm already moves faster than it can brake to rest inside the boxes themselves (not the
                # margin the speed factor plans with) and joint limits at the braking envelope's deceleration (it
                # lagged far behind targets that were brakeable where *they* are, issue 9): brake harder than the
                # per-motion factors (1.2 rad/s^2 measured: the commanded TCP went 16 mm out of the box), within
                # braking_acceleration_ratio x the TCP acceleration limits (franky's full limits until session 18:
                # 1 kHz TCP steps up to 4.7 x max_acceleration_m_s2 x 1 ms).
                self.guard.counter.add("harder_braking")
                f_acc, f_jerk = self.braking_dynamics_factors(q)
                self.last_braking = "braking"
            elif velocity is not None and (f_acc < 1.0 or f_jerk < 1.0) and self._overspeed(start, velocity):
                # Faster than the TCP limits already (the speed factor lowered its target speed): shed it harder,
                # not over ~100 ms at the per-motion factors.
                self.guard.counter.add("harder_braking_overspeed")
                f_acc, f_jerk = self.braking_dynamics_factors(q)
                self.last_braking = "overspeed"
            self.last_dynamics_factors = (f_acc, f_jerk)
            qd_plan = qd
            qd, duration = self._consistent_feed_forward(qd, q - start, velocity, f_acc, allowed, arrival_s)
            if duration is not None and np.any(qd) and not self.braking.brakeable(q, qd):
                # The consistent velocity (not along the checked direction when the arm is off its plan) must
                # leave the arm brakeable where it arrives; else the reachable one, planned time-optimally.
                qd, duration = self._reachable_feed_forward(qd_plan, q - start, velocity, f_acc), None
            qd = self._brakeable_when_passing(q, qd, q - start)
            self.last_arrival_s = duration
            self.last_target_velocity_rad_s = qd.astype(np.float64)
            minimum = None if duration is None else franky.Duration(int(round(1e3 * duration)))
            waypoints = [franky.JointWaypoint(franky.JointState(q, self.last_target_velocity_rad_s),
                                              minimum_time=minimum)]
            if np.any(qd):
                waypoints.append(franky.JointWaypoint(q, relative_dynamics_factor=BRAKE_TO_REST))
            return franky.JointWaypointMotion(waypoints, franky.RelativeDynamicsFactor(factor, f_acc, f_jerk),
                                              return_when_finished=False)
        tcp = cmd.tcp
        v = tcp.step_velocity_m_s * feed_forward_scale
        pose = franky.RobotPose(franky.Affine(tcp.position_m.astype(np.float64),
                                              tcp.quaternion_xyzw.astype(np.float64)))
        state = franky.CartesianState(pose, franky.RobotVelocity(franky.Twist(v.astype(np.float64), np.zeros(3))))
        waypoints = [franky.CartesianWaypoint(state)]
        if np.any(v):
            waypoints.append(franky.CartesianWaypoint(pose, relative_dynamics_factor=BRAKE_TO_REST))
        return franky.CartesianWaypointMotion(waypoints, return_when_finished=False)

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
