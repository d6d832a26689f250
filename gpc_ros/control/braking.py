"""The braking envelope: how fast franky's planner may move the arm and still brake to rest inside the envelope.

Pure numpy and the FR3 model, no franky.

Every streamed motion restarts franky's planner (Ruckig) from the state the robot reports: the last command's
position, but the *reported* velocity ``dq_d`` and acceleration ``ddq_d``. franky-sim 1.0.4 itself reports a low-pass
of the commanded velocity (about 20 ms behind); with it a re-plan every 10-20 ms of robot time restarted each braking
from a velocity it had already shed: a joint braked at 1.35 rad/s^2 where the planner's limit is 5 rad/s^2, overshot
its target by 0.25 rad and carried the commanded TCP 46 mm out of the workspace box (docs/driver.md). Since
2026-12-02 the sim server reports the exact last commanded state, as a real FR3 does
(:class:`gpc_ros.sim.franky_sim_server.CommandedState`), and re-plans brake at the planner's limit. Since the per-motion
acceleration factor (:meth:`~gpc_ros.control.command_gate.CommandGate.joint_dynamics_factors`) that limit is
``BRAKING_FLOOR_MARGIN`` x ``braking_deceleration_rad_s2`` at the default envelope (re-checked with
bench/braking_probe.py: a lone joint braked at a mean 1.13 rad/s^2 where 1.0 is assumed, starting 2-6 ms after the
hold where 20 ms is assumed), and franky's re-plans brake time-synchronised: every joint over the same time, along a
straight line, the slower joints further than on their own. Both paths are checked. The joint-space check of each
*target* cannot see any of this; what bounds it is the planner's speed.

So the motion's velocity factor (:meth:`~gpc_ros.control.command_gate.CommandGate.joint_speed_factor`) is also
limited by this envelope. From the robot's commanded joints ``q``, a joint velocity ``v`` is *brakeable* when the arm,
every joint braking on its own at ``braking_deceleration_rad_s2`` after a delay of ``braking_lag_s`` (with franky-sim's
low-passed report, re-plans braked each joint like that, so the path bends as the slower joints stop first)::

    q_i(t) = q_i + v_i min(t, lag) + sign(v_i) (|v_i| tau - a tau^2 / 2),   tau = clip(t - lag, 0, |v_i| / a)

keeps its TCP inside the workspace box and its elbow and wrist inside the arm box, each shrunk by
``braking_margin_m``, every joint ``joint_halt_margin_rad`` inside its limit, and the TCP within ``max_speed_m_s``
and ``max_rotation_speed_rad_s``, along the whole path (sampled). The speed part matters for motions whose joints
nearly cancel at the TCP (fast joints, slow TCP): when the slower joints have stopped, the faster ones alone moved
the TCP at 1.2 x ``max_speed_m_s`` on franky-sim.
The factor is the largest at which the planner's fastest velocity towards the target is brakeable; when the velocity
the planner starts from is not, the factor is lowered by the scale that would make it so (the planner then brakes at
its full acceleration). A point already outside its shrunk box only counts when its excess grows, so an arm can always
move back in.
"""

from __future__ import annotations

import numpy as np

from gpc_ros.control.envelope import SafetyEnvelopeConfig
from gpc_ros.control.joint_guard import box_excess_m
from gpc_ros.control.kinematics import FR3Kinematics

#: Samples along a braking path (equal steps of time, the stop included).
PATH_SAMPLES = 4
#: Bisection steps for the largest brakeable scale of a velocity (known to within 2^-4 of the range).
SCALE_BISECTIONS = 4
#: A point's excess over its shrunk box may grow by this much (m) along the path (FK rounding).
EXCESS_TOLERANCE_M = 1e-4


class BrakingEnvelope:
    """Room along a joint-space direction and the speed from which the arm stops within it (module docstring).

    Args:
        config: The envelope config (boxes, ``braking_*`` fields, ``joint_halt_margin_rad``).
        kinematics: FR3 model for the TCP, elbow and wrist (not thread-safe: one owner).
        lower_rad: (7,) hard joint lower limits (rad), before the halt margin.
        upper_rad: (7,) hard joint upper limits (rad), before the halt margin.
    """

    def __init__(self, config: SafetyEnvelopeConfig, kinematics: FR3Kinematics, lower_rad: np.ndarray,
                 upper_rad: np.ndarray) -> None:
        self.config = config
        self.kinematics = kinematics
        m = config.braking_margin_m
        self.boxes = {"tcp": (config.lower_m + m, config.upper_m - m),
                      "elbow": (config.arm_lower_m + m, config.arm_upper_m - m),
                      "wrist": (config.arm_lower_m + m, config.arm_upper_m - m)}
        """Box (lower, upper) each check point must stop in (m): the envelope's boxes shrunk by the margin."""
        self.joint_lower_rad = np.asarray(lower_rad, dtype=np.float64) + config.joint_halt_margin_rad
        """(7,) joint positions the braking arm must stop inside (hard limits shrunk by the halt margin), rad."""
        self.joint_upper_rad = np.asarray(upper_rad, dtype=np.float64) - config.joint_halt_margin_rad

    # -- the braking curve -------------------------------------------------------------------------------------------
    def stopping_distance_rad(self, speed_rad_s: float) -> float:
        """Distance (rad) a joint at ``speed_rad_s`` travels before it is at rest: ``v lag + v^2 / (2 a)``."""
        c = self.config
        v = abs(float(speed_rad_s))
        return v * c.braking_lag_s + v * v / (2.0 * c.braking_deceleration_rad_s2)

    def speed_rad_s(self, room_rad: float) -> float:
        """Largest joint speed (rad/s) from which the arm stops within ``room_rad`` (inverse of the above)."""
        c = self.config
        a, lag = c.braking_deceleration_rad_s2, c.braking_lag_s
        return float(a * (np.sqrt(lag * lag + 2.0 * max(float(room_rad), 0.0) / a) - lag))

    # -- brakeable velocities ----------------------------------------------------------------------------------------
    def _excess(self, joint_positions_rad: np.ndarray) -> dict[str, float]:
        points = self.kinematics.check_points(joint_positions_rad)
        return {name: box_excess_m(points[name], lo, hi) for name, (lo, hi) in self.boxes.items()}

    def stopping_displacement_rad(self, velocity_rad_s: np.ndarray) -> np.ndarray:
        """(7,) displacement of each joint until at rest, braking on its own (rad, signed)."""
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        return np.sign(v) * np.array([self.stopping_distance_rad(x) for x in v])

    def braking_path(self, start_rad: np.ndarray, velocity_rad_s: np.ndarray, samples: int = PATH_SAMPLES,
                     synchronized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Joints (samples, 7) (rad) and joint velocities (samples, 7) (rad/s) along the braking path.

        The samples are at equal steps of time, the last one at rest. ``synchronized``: every joint brakes over the
        same time ``T = max_i |v_i| / a`` (franky's time-synchronised re-plan), i.e. along a straight line in joint
        space, the slower joints at less than ``a`` and so *further* than on their own (``|v_i| T / 2``).
        """
        c = self.config
        a, lag = c.braking_deceleration_rad_s2, c.braking_lag_s
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        speed = np.abs(v)
        stop = float(speed.max()) / a
        t = (lag + stop) * np.arange(1, samples + 1)[:, None] / samples
        start = np.asarray(start_rad, dtype=np.float64)
        if synchronized:
            tau = np.clip(t - lag, 0.0, stop)
            q = start + v * np.minimum(t, lag) + v * (tau - tau * tau / (2.0 * max(stop, 1e-12)))
            return q, v * (1.0 - tau / max(stop, 1e-12))
        tau = np.clip(t - lag, 0.0, speed / a)
        q = start + v * np.minimum(t, lag) + np.sign(v) * (speed * tau - 0.5 * a * tau * tau)
        return q, np.sign(v) * (speed - a * tau)

    def brakeable(self, start_rad: np.ndarray, velocity_rad_s: np.ndarray, baseline: dict[str, float] | None = None,
                  speeds: bool = True) -> bool:
        """Whether the arm at ``start_rad`` moving at ``velocity_rad_s`` brakes to rest inside (module docstring).

        Inside: the boxes shrunk by the margin, the joint limits shrunk by the halt margin, the TCP speed limits.

        Args:
            start_rad: (7,) joints (rad).
            velocity_rad_s: (7,) joint velocity (rad/s).
            baseline: Each check point's excess over its shrunk box at ``start_rad`` (computed when None).
            speeds: Also check the TCP speed limits along the path (False: only where the arm comes to rest).
        """
        start = np.asarray(start_rad, dtype=np.float64)
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        if float(np.abs(v).max()) < 1e-12:
            return True
        c = self.config
        synced_end = start + v * (c.braking_lag_s + 0.5 * float(np.abs(v).max()) / c.braking_deceleration_rad_s2)
        for end in (start + self.stopping_displacement_rad(v), synced_end):
            lower_bad = (end < self.joint_lower_rad) & (v < 0.0)
            upper_bad = (end > self.joint_upper_rad) & (v > 0.0)
            if np.any(lower_bad | upper_bad):
                return False
        base = self._excess(start) if baseline is None else baseline
        path, velocities = self.braking_path(start, v)
        for i, (q, w) in enumerate(zip(np.vstack([start, path]), np.vstack([v, velocities]))):
            excess = base if i == 0 else self._excess(q)
            if any(excess[k] > base[k] + EXCESS_TOLERANCE_M for k in excess):
                return False
            if speeds and np.any(w):
                twist = self.kinematics.jacobian(q) @ w
                if np.linalg.norm(twist[:3]) > c.max_speed_m_s or \
                        np.linalg.norm(twist[3:]) > c.max_rotation_speed_rad_s:
                    return False
        # The time-synchronised path (franky's re-plans): straight in joint space, the joint velocity only scaled
        # down (its TCP speed is not checked again), but the slower joints travel further than on their own.
        for q in self.braking_path(start, v, synchronized=True)[0]:
            excess = self._excess(q)
            if any(excess[k] > base[k] + EXCESS_TOLERANCE_M for k in excess):
                return False
        return True

    def brakeable_scale(self, start_rad: np.ndarray, velocity_rad_s: np.ndarray, upper: float = 1.0,
                        speeds: bool = True) -> float:
        """Largest scale ``s`` in [0, ``upper``] at which ``s * velocity_rad_s`` is :meth:`brakeable`.

        By bisection: ``upper`` when that is brakeable, 0 when only rest is.
        """
        start = np.asarray(start_rad, dtype=np.float64)
        v = np.asarray(velocity_rad_s, dtype=np.float64)
        if not (np.all(np.isfinite(start)) and np.all(np.isfinite(v))):
            return float(upper)
        base = self._excess(start)
        if self.brakeable(start, upper * v, base, speeds):
            return float(upper)
        good, bad = 0.0, float(upper)
        for _ in range(SCALE_BISECTIONS):
            mid = 0.5 * (good + bad)
            if self.brakeable(start, mid * v, base, speeds):
                good = mid
            else:
                bad = mid
        return good
