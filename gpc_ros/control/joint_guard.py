"""Joint-space check of every command before it reaches franky (pure numpy + the FR3 model, no franky).

Every target the executor streams, Cartesian or joint, becomes a joint vector here and is only commanded if it
passes the checks below; the arm then follows joint targets, so what was checked is what the arm is asked to do.

- A pose target (already limited by :meth:`SafetyEnvelope.clamp_cartesian`) is solved by damped-least-squares IK
  seeded at the last joint command, inside the joint limits shrunk by ``joint_limit_margin_rad``. A residual above
  ``reachability_tolerance_m`` means unreachable: ``project`` keeps the IK result (the nearest pose found from
  where the arm is), ``reject`` holds the last command. Counted: ``projected_unreachable`` / ``held_unreachable``.
- A joint target (from a joint chunk, or the IK solution) is limited per period: into the margin-shrunk limits,
  joint speed ``max_joint_speed_rad_s`` and acceleration ``max_joint_acceleration_rad_s2`` (scaled uniformly, so
  the direction of the step is kept), braking before a joint limit; then the step is shortened so that the TCP
  moves at most ``max_speed_m_s`` and turns at most ``max_rotation_speed_rad_s`` (``clamped_tcp_speed``).
- **Containment**: the *violation* of a joint vector is how far its TCP is outside the workspace box, plus how far
  the elbow and wrist are outside the arm box, plus how far joints are beyond the margin-shrunk limits, plus the
  manipulability deficit below ``min_manipulability``. A command is accepted when each of these parts is zero or
  not larger than in the previous command (so a target moving *away* from a violated limit is always executed: no
  deadlock). Otherwise the step is shortened by bisection to the largest safe fraction of the step (counted
  ``clamped_containment``); the previous command satisfied the rule, so fraction 0 always does.

The check is exact at the commanded joint vectors; between two commands (20 ms apart, steps of at most
``max_speed_m_s * period`` at the TCP) franky interpolates in joint space, which bends the TCP path by far less
than a millimetre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpc_ros.control.envelope import CartesianCommand, InterventionCounter, SafetyEnvelopeConfig, braking_speed
from gpc_ros.control.kinematics import FR3Kinematics

#: Bisection steps when shortening an unsafe step (the step is then known to within 2^-8 of its length).
CONTAINMENT_BISECTIONS = 8
#: Weight of the manipulability deficit in the violation (it has no length unit; 1.0 = 1 m per unit).
MANIPULABILITY_WEIGHT = 1.0


@dataclass(frozen=True)
class JointCommand:
    """A checked joint command and its TCP (what the arm is asked to do next)."""

    joint_positions_rad: np.ndarray
    """(7,) joint target (rad)."""
    joint_velocities_rad_s: np.ndarray
    """(7,) (target - previous target) / period (rad/s): feed-forward and the base of the acceleration limit."""
    tcp: CartesianCommand
    """FK of the joint target: TCP position/orientation, with its step velocity."""
    violation: dict[str, float]
    """Each part of the violation of the target (0 inside every limit); none larger than the previous command's."""


def box_excess_m(point: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Distance (m) from ``point`` to the box [lower, upper] (0 inside)."""
    return float(np.linalg.norm(np.maximum(lower - point, 0.0) + np.maximum(point - upper, 0.0)))


class JointSpaceGuard:
    """Turns targets into joint commands that satisfy the envelope in joint space (see the module docstring)."""

    def __init__(self, config: SafetyEnvelopeConfig, kinematics: FR3Kinematics,
                 counter: InterventionCounter | None = None) -> None:
        self.config = config
        self.kinematics = kinematics
        self.counter = counter if counter is not None else InterventionCounter()
        lo = np.maximum(np.array(config.joint_lower_rad), kinematics.lower_rad)
        hi = np.minimum(np.array(config.joint_upper_rad), kinematics.upper_rad)
        self.hard_lower_rad = lo
        """(7,) joint limits used: the tighter of the config's (datasheet) and the URDF's (rad)."""
        self.hard_upper_rad = hi
        self.command_lower_rad = lo + config.joint_limit_margin_rad
        """(7,) limits joint commands are kept in (hard limits shrunk by joint_limit_margin_rad)."""
        self.command_upper_rad = hi - config.joint_limit_margin_rad

    # -- measures --------------------------------------------------------------------------------------------------
    def violations(self, joint_positions_rad: np.ndarray) -> dict[str, float]:
        """Each part of the violation of a joint vector (m, rad, or manipulability units; 0 = inside)."""
        c = self.config
        q = np.asarray(joint_positions_rad, dtype=np.float64)
        pts = self.kinematics.check_points(q)
        out = {"tcp": box_excess_m(pts["tcp"], c.lower_m, c.upper_m),
               "elbow": box_excess_m(pts["elbow"], c.arm_lower_m, c.arm_upper_m),
               "wrist": box_excess_m(pts["wrist"], c.arm_lower_m, c.arm_upper_m),
               "joints": float(np.sum(np.maximum(self.command_lower_rad - q, 0.0)
                                      + np.maximum(q - self.command_upper_rad, 0.0)))}
        if c.min_manipulability > 0.0:
            out["singularity"] = MANIPULABILITY_WEIGHT * max(0.0, c.min_manipulability
                                                             - self.kinematics.manipulability(q))
        return out

    def violation(self, joint_positions_rad: np.ndarray) -> float:
        """Sum of :meth:`violations` (0 when the joint vector is inside every limit)."""
        return float(sum(self.violations(joint_positions_rad).values()))

    def seed(self, joint_positions_rad: np.ndarray) -> JointCommand:
        """A command at a measured joint vector, at rest (after connecting, a stop, a recovery)."""
        q = np.asarray(joint_positions_rad, dtype=np.float64).copy()
        p, quat = self.kinematics.forward(q)
        return JointCommand(q, np.zeros(7), CartesianCommand(p, quat, np.zeros(3), np.zeros(3)), self.violations(q))

    @staticmethod
    def _acceptable(v_new: dict[str, float], v_prev: dict[str, float]) -> bool:
        """Every part of the violation is zero or not larger than before (no trading one limit for another)."""
        return all(v <= 1e-12 or v <= v_prev.get(k, 0.0) + 1e-9 for k, v in v_new.items())

    # -- commands --------------------------------------------------------------------------------------------------
    def limit_joint_step(self, target_rad: np.ndarray, previous: JointCommand, period_s: float) -> np.ndarray:
        """The joint target clipped into the command limits, then limited in speed, acceleration and braking.

        Clipping is skipped for a joint moving in from outside the limits; speed, acceleration and braking distance
        are limited relative to ``previous`` over ``period_s`` (s). The step keeps its direction.

        Args:
            target_rad: (7,) joint target (rad).
            previous: The last command issued.
            period_s: Control period (s).

        Returns:
            (7,) limited joint target (rad).
        """
        c = self.config
        q_prev = previous.joint_positions_rad
        q = np.asarray(target_rad, dtype=np.float64)
        clipped = np.clip(q, np.minimum(self.command_lower_rad, q_prev), np.maximum(self.command_upper_rad, q_prev))
        if np.any(clipped != q):
            self.counter.add("clamped_joint_limit")
        v = (clipped - q_prev) / period_s
        dv = v - previous.joint_velocities_rad_s
        a_step = c.max_joint_acceleration_rad_s2 * period_s
        worst = float(np.abs(dv).max())
        if worst > a_step:
            self.counter.add("clamped_joint_acceleration")
            v = previous.joint_velocities_rad_s + dv * (a_step / worst)
        # Speed: at most the limit, and slow enough to stop at the target and before each joint's command limit.
        room = np.where(v < 0.0, q_prev - self.command_lower_rad, self.command_upper_rad - q_prev)
        cap = np.minimum(braking_speed(np.maximum(room, 0.0), c.max_joint_acceleration_rad_s2, period_s),
                         c.max_joint_speed_rad_s)
        cap = np.where(room < 0.0, c.max_joint_speed_rad_s, cap)  # outside already: only moving in is allowed anyway
        # A joint at rest exactly at its command limit has cap 0: 0 / 0 would be NaN, and a NaN ratio skipped the
        # speed clamp of every *other* joint (seen: test_a_joint_ramp_to_the_limit_does_not_deadlock warned of it).
        speed = np.abs(v)
        ratio = float(np.max(np.where(speed > 0.0, speed / np.maximum(cap, 1e-300), 0.0)))
        if ratio > 1.0:
            if float(np.abs(v).max()) > c.max_joint_speed_rad_s:
                self.counter.add("clamped_joint_speed")
            v = v / ratio
        return q_prev + v * period_s

    def _tcp_limited_fraction(self, q_prev: np.ndarray, step: np.ndarray, tcp_prev: CartesianCommand,
                              period_s: float) -> float:
        """Largest fraction (<= 1) of the joint step whose TCP stays within the Cartesian speed limits.

        The TCP may move at most ``max_speed_m_s * period`` and turn at most ``max_rotation_speed_rad_s * period``
        (a joint step can swing the TCP faster than the joints move).
        """
        c = self.config
        fraction = 1.0
        for _ in range(6):
            p, quat = self.kinematics.forward(q_prev + fraction * step)
            moved = float(np.linalg.norm(p - tcp_prev.position_m))
            turned = 2.0 * float(np.arccos(min(1.0, abs(float(np.dot(quat, tcp_prev.quaternion_xyzw))))))
            ratio = max(moved / (c.max_speed_m_s * period_s), turned / (c.max_rotation_speed_rad_s * period_s))
            if ratio <= 1.0:
                return fraction
            if fraction == 1.0:
                self.counter.add("clamped_tcp_speed")
            fraction *= 0.999 / ratio
        return 0.0  # not found in a few shrinks (never seen): do not move

    def contain(self, candidate_rad: np.ndarray, previous: JointCommand, period_s: float) -> JointCommand:
        """The command at the largest safe fraction of the step ``previous -> candidate``.

        The step is first TCP-speed limited; the fraction is then found by bisection so that every violation part is
        zero or not larger than the previous command's (fraction 0 = hold the previous).

        Args:
            candidate_rad: (7,) joint candidate (rad).
            previous: The last command issued.
            period_s: Control period (s).

        Returns:
            The contained joint command.
        """
        q_prev = previous.joint_positions_rad
        step = np.asarray(candidate_rad, dtype=np.float64) - q_prev
        step = step * self._tcp_limited_fraction(q_prev, step, previous.tcp, period_s)
        v_full = self.violations(q_prev + step)
        if self._acceptable(v_full, previous.violation):
            fraction, v_best = 1.0, v_full
        else:
            self.counter.add("clamped_containment")
            lo, hi, v_best = 0.0, 1.0, previous.violation
            for _ in range(CONTAINMENT_BISECTIONS):
                mid = 0.5 * (lo + hi)
                v_mid = self.violations(q_prev + mid * step)
                if self._acceptable(v_mid, previous.violation):
                    lo, v_best = mid, v_mid
                else:
                    hi = mid
            fraction = lo
        q = q_prev + fraction * step
        p, quat = self.kinematics.forward(q)
        tcp_prev = previous.tcp
        if np.dot(quat, tcp_prev.quaternion_xyzw) < 0.0:
            quat = -quat
        step_velocity = (p - tcp_prev.position_m) / period_s
        return JointCommand(q, (q - q_prev) / period_s, CartesianCommand(p, quat, step_velocity, step_velocity),
                            v_best)

    def joint_command(self, target_rad: np.ndarray, previous: JointCommand, period_s: float) -> JointCommand:
        """A checked command towards a joint target (joint chunks)."""
        return self.contain(self.limit_joint_step(target_rad, previous, period_s), previous, period_s)

    def pose_command(self, target: CartesianCommand, previous: JointCommand, period_s: float) -> JointCommand:
        """A checked joint command towards a pose already limited by the envelope's Cartesian clamp.

        IK is solved from the last command, reachability handled per ``unreachable_policy``, then
        :meth:`joint_command`'s limits and containment apply.

        Args:
            target: TCP target (m, base frame; quaternion x, y, z, w).
            previous: The last command issued.
            period_s: Control period (s).

        Returns:
            The checked joint command.
        """
        c = self.config
        res = self.kinematics.inverse(target.position_m, target.quaternion_xyzw, previous.joint_positions_rad,
                                      lower_rad=np.minimum(self.command_lower_rad, previous.joint_positions_rad),
                                      upper_rad=np.maximum(self.command_upper_rad, previous.joint_positions_rad),
                                      max_iterations=20, position_tolerance_m=1e-7, rotation_tolerance_rad=1e-6)
        residual = res.position_error_m + 0.2 * res.rotation_error_rad
        q_target = res.joint_positions_rad
        if residual > c.reachability_tolerance_m:
            if c.unreachable_policy == "reject":
                self.counter.add("held_unreachable")
                q_target = previous.joint_positions_rad
            else:
                self.counter.add("projected_unreachable")
        return self.joint_command(q_target, previous, period_s)
