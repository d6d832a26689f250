"""The safety envelope: limits every target must satisfy before it is sent to the arm (pure numpy, no franky).

franky-sim raises no reflex or limit errors, and a real FR3's reflexes stop the arm with an error only after the
fact; this envelope is the guard. Policy (docs/driver.md):

- **rejected** (the whole chunk, with a reason; the arm keeps following the previous plan): malformed chunks
  (see :mod:`gpc_ros.control.chunk`), a *jump* (two consecutive targets of the chunk, or its first target and
  the target being commanded now, further apart than ``max_target_jump_m`` / ``max_target_jump_rad``).
- **clamped** (the command is changed and sent): positions into the workspace box; joint targets into the
  joint limits shrunk by ``joint_limit_margin_rad``; the change between consecutive commands to the speed limits
  times the control period; gripper widths into ``[gripper_min_width_m, gripper_max_width_m]``.
- **halted**: a measured joint beyond its margin-shrunk limit stops the arm and drops the plan.

Every intervention increments a named counter in :class:`InterventionCounter` (reported on /diagnostics).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from gpc_ros.control.chunk import ARM_DOF, ActionChunk, ChunkRejectedError

#: FR3 joint position limits (rad), from Franka's published robot specifications.
FR3_JOINT_LOWER_RAD: tuple[float, ...] = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_JOINT_UPPER_RAD: tuple[float, ...] = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)


#: What happens to a pose target the arm cannot reach (SafetyEnvelopeConfig.unreachable_policy).
UNREACHABLE_POLICIES: tuple[str, ...] = ("project", "reject")


def _vec(name: str, value, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"SafetyEnvelopeConfig.{name} must be {n} finite numbers, got {value!r}")
    return arr


def _positive(name: str, value: float, upper: float = np.inf) -> None:
    if not (isinstance(value, (int, float)) and np.isfinite(value) and 0.0 < value <= upper):
        raise ValueError(f"SafetyEnvelopeConfig.{name} must be a number in (0, {upper}], got {value!r}")


@dataclass(frozen=True)
class SafetyEnvelopeConfig:
    """Limits applied to every target (frames: fr3_link0 base; units in the names)."""

    # --- workspace (end effector fr3_hand_tcp in fr3_link0) ---
    workspace_min_m: tuple[float, float, float] = (0.25, -0.40, 0.05)
    """Lower corner (x, y, z) of the box the end-effector (TCP) targets are kept in (m)."""
    workspace_max_m: tuple[float, float, float] = (0.75, 0.40, 0.70)
    """Upper corner (x, y, z) of the box (m)."""
    arm_points_min_m: tuple[float, float, float] = (-0.30, -0.60, 0.05)
    """Lower corner of the box the elbow (fr3_link4) and wrist (fr3_link6) must stay in, so the arm cannot fold
    behind its base or reach under the table (m)."""
    arm_points_max_m: tuple[float, float, float] = (0.90, 0.60, 1.10)
    """Upper corner of the elbow/wrist box (m)."""
    # --- joints ---
    joint_lower_rad: tuple[float, ...] = FR3_JOINT_LOWER_RAD
    """Joint position lower limits fr3_joint1..7 (rad), before the margin (the tighter of these and the URDF's
    limits is used)."""
    joint_upper_rad: tuple[float, ...] = FR3_JOINT_UPPER_RAD
    """Joint position upper limits fr3_joint1..7 (rad), before the margin."""
    joint_limit_margin_rad: float = 0.1
    """Joint commands are kept this far inside the limits (rad)."""
    joint_halt_margin_rad: float = 0.03
    """A *measured* joint closer than this to its limit (or beyond it) halts the arm with a fault (rad, smaller
    than joint_limit_margin_rad: the difference is the tracking error tolerated)."""
    min_manipulability: float = 0.01
    """Commands whose TCP manipulability sqrt(det(J J^T)) is below this are not approached further (singularity
    margin; the FR3 has about 0.1 at its home pose)."""
    # --- speeds, accelerations, jerks (franky's own limits are set to these) ---
    max_speed_m_s: float = 0.25
    """Largest end-effector translational speed (m/s)."""
    max_acceleration_m_s2: float = 2.0
    """Largest end-effector translational acceleration (m/s^2) of the checked commands and, in ``joint`` streaming, of
    franky's planner while it tracks them (each motion's acceleration factor; up to 1.5 x where the braking floor
    binds, at the defaults); ``braking_acceleration_ratio`` x this where the gate brakes harder (counted). Braking at
    franky's full limits (planned stops, a motion not replaced before its target, a spurious start) is bounded per
    joint by ``max_joint_acceleration_rad_s2`` only (docs/driver.md, *The guarantee, precisely*)."""
    max_jerk_m_s3: float = 2000.0
    """Largest end-effector translational jerk (m/s^3), given to franky's planner."""
    max_rotation_speed_rad_s: float = 1.0
    """Largest end-effector rotational speed (rad/s)."""
    max_rotation_acceleration_rad_s2: float = 5.0
    """Largest end-effector rotational acceleration (rad/s^2)."""
    max_rotation_jerk_rad_s3: float = 5000.0
    """Largest end-effector rotational jerk (rad/s^3), given to franky's planner."""
    max_joint_speed_rad_s: float = 1.0
    """Largest joint speed (rad/s), every joint."""
    max_joint_acceleration_rad_s2: float = 5.0
    """Largest joint acceleration (rad/s^2), every joint: franky's planner's limit, so every motion, braking too (a
    1 kHz joint velocity step is at most this x 1 ms within a motion, up to 1.3 x at a re-plan: libfranka's 100 Hz
    command low-pass)."""
    max_joint_jerk_rad_s3: float = 5000.0
    """Largest joint jerk (rad/s^3), given to franky's planner (capped per joint by franky's own maximum; low
    jerks make a streamed, often preempted motion crawl)."""
    max_target_jump_m: float = 0.10
    """A chunk whose first target is further than this from the arm's measured TCP (and from the target
    commanded now), or with consecutive targets further apart, is a jump: rejected (m)."""
    max_target_jump_rad: float = 0.5
    """Same for orientation (angle) and joint targets (largest joint change) (rad)."""
    # --- reachability ---
    unreachable_policy: str = "project"
    """A pose target the arm cannot reach within the joint limits, box and singularity margin: ``project``
    (command the nearest reachable pose found: IK from the last command) or ``reject`` (hold the last command)."""
    reachability_tolerance_m: float = 0.002
    """IK residual above which a pose target counts as unreachable (m; rotation counts 0.2 m per rad)."""
    # --- braking (franky's planner restarts every motion from the reported velocity: gpc_ros/control/braking.py) ---
    braking_deceleration_rad_s2: float = 1.0
    """Deceleration (rad/s^2, every joint) the braking envelope assumes the arm brakes with between re-plans:
    the planner's speed along a motion is limited so that it can stop inside the boxes and joint limits at this rate.
    With franky-sim's own lagging reported velocity a re-plan every 10-20 ms braked at 0.2-0.4 x the planner's
    ``max_joint_acceleration_rad_s2`` (measured: 1.35 rad/s^2 of 5), hence this value. With the exact commanded state
    the sim server reports now (as a real FR3 does) re-plans brake at the planner's limit, and the per-motion
    acceleration factor never takes that below 1.25 x this value (command_gate.BRAKING_FLOOR_MARGIN); raising it
    raises the planner's acceleration and loosens the TCP acceleration bound where that floor binds (docs/driver.md)."""
    braking_lag_s: float = 0.02
    """Delay (s) before the braking above starts (chosen when franky-sim's own report, a low-pass of the commanded
    velocity about 20 ms behind, was what re-plans started from; with the exact report braking started 2-6 ms after a
    hold, bench/braking_probe.py; kept: a re-plan may come a control period late)."""
    braking_margin_m: float = 0.005
    """The braking arm's TCP, elbow and wrist stop this far inside their boxes (m)."""
    braking_acceleration_ratio: float = 3.0
    """Where the driver brakes harder than its per-motion factors (an arm too fast to brake inside the boxes at
    ``braking_deceleration_rad_s2``, or faster than the TCP speed limits), franky's planner keeps the TCP's
    acceleration within this x ``max_acceleration_m_s2`` and x ``max_rotation_acceleration_rad_s2`` (the motion's
    acceleration factor bounds ``sum_i f a_i |J_i|``, as while tracking; docs/driver.md). At least 1."""
    # --- measured state ---
    measured_box_tolerance_m: float = 0.03
    """A *measured* TCP, elbow or wrist further than this outside its box halts the arm with a fault (m)."""
    # --- gripper ---
    gripper_min_width_m: float = 0.0
    gripper_max_width_m: float = 0.08
    """Gripper width targets are clamped into [gripper_min_width_m, gripper_max_width_m] (m)."""
    gripper_max_force_n: float = 40.0
    """Largest grasp force (N)."""
    gripper_speed_m_s: float = 0.05
    """Gripper finger speed (m/s)."""
    # --- planner ---
    relative_dynamics_factor: float = 1.0
    """franky's relative dynamics factor, in (0, 1]: scales the velocity, acceleration and jerk limits above
    further (franky's limits are set to the ones above; 1.0 = exactly those)."""

    lower_m: np.ndarray = field(init=False, repr=False, compare=False)
    upper_m: np.ndarray = field(init=False, repr=False, compare=False)
    arm_lower_m: np.ndarray = field(init=False, repr=False, compare=False)
    arm_upper_m: np.ndarray = field(init=False, repr=False, compare=False)
    joint_min_rad: np.ndarray = field(init=False, repr=False, compare=False)
    joint_max_rad: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lo = _vec("workspace_min_m", self.workspace_min_m, 3)
        hi = _vec("workspace_max_m", self.workspace_max_m, 3)
        if np.any(lo >= hi):
            raise ValueError(f"SafetyEnvelopeConfig.workspace_min_m must be below workspace_max_m on every axis, "
                             f"got {self.workspace_min_m!r} and {self.workspace_max_m!r}")
        alo = _vec("arm_points_min_m", self.arm_points_min_m, 3)
        ahi = _vec("arm_points_max_m", self.arm_points_max_m, 3)
        if np.any(alo >= ahi):
            raise ValueError(f"SafetyEnvelopeConfig.arm_points_min_m must be below arm_points_max_m on every axis, "
                             f"got {self.arm_points_min_m!r} and {self.arm_points_max_m!r}")
        jlo = _vec("joint_lower_rad", self.joint_lower_rad, ARM_DOF)
        jhi = _vec("joint_upper_rad", self.joint_upper_rad, ARM_DOF)
        if not (np.isfinite(self.joint_limit_margin_rad) and self.joint_limit_margin_rad >= 0.0):
            raise ValueError(f"SafetyEnvelopeConfig.joint_limit_margin_rad must be >= 0 rad, "
                             f"got {self.joint_limit_margin_rad!r}")
        jmin, jmax = jlo + self.joint_limit_margin_rad, jhi - self.joint_limit_margin_rad
        if np.any(jmin >= jmax):
            raise ValueError(f"SafetyEnvelopeConfig.joint_limit_margin_rad {self.joint_limit_margin_rad} with "
                             f"joint_lower_rad/joint_upper_rad leaves no range, got {self.joint_lower_rad!r}, "
                             f"{self.joint_upper_rad!r}")
        for name in ("max_speed_m_s", "max_acceleration_m_s2", "max_jerk_m_s3", "max_rotation_speed_rad_s",
                     "max_rotation_acceleration_rad_s2", "max_rotation_jerk_rad_s3", "max_joint_speed_rad_s",
                     "max_joint_acceleration_rad_s2", "max_joint_jerk_rad_s3", "max_target_jump_m",
                     "max_target_jump_rad", "gripper_max_force_n", "gripper_speed_m_s", "reachability_tolerance_m",
                     "measured_box_tolerance_m"):
            _positive(name, getattr(self, name))
        _positive("braking_deceleration_rad_s2", self.braking_deceleration_rad_s2, 100.0)
        if not (isinstance(self.braking_lag_s, (int, float)) and 0.0 <= self.braking_lag_s <= 1.0):
            raise ValueError(f"SafetyEnvelopeConfig.braking_lag_s must be a number in [0, 1] s, "
                             f"got {self.braking_lag_s!r}")
        if not (isinstance(self.braking_acceleration_ratio, (int, float)) and
                1.0 <= self.braking_acceleration_ratio <= 100.0):
            raise ValueError(f"SafetyEnvelopeConfig.braking_acceleration_ratio must be a number in [1, 100], "
                             f"got {self.braking_acceleration_ratio!r}")
        half = float(min(np.min(hi - lo), np.min(ahi - alo))) / 2.0
        if not (isinstance(self.braking_margin_m, (int, float)) and 0.0 <= self.braking_margin_m < half):
            raise ValueError(f"SafetyEnvelopeConfig.braking_margin_m must be a number in [0, {half:.3f}) m (half the "
                             f"smallest box side), got {self.braking_margin_m!r}")
        if not (isinstance(self.joint_halt_margin_rad, (int, float)) and
                0.0 <= self.joint_halt_margin_rad < self.joint_limit_margin_rad):
            raise ValueError(f"SafetyEnvelopeConfig.joint_halt_margin_rad must be in [0, joint_limit_margin_rad "
                             f"{self.joint_limit_margin_rad}) rad, got {self.joint_halt_margin_rad!r}")
        if not (isinstance(self.min_manipulability, (int, float)) and 0.0 <= self.min_manipulability < 1.0):
            raise ValueError(f"SafetyEnvelopeConfig.min_manipulability must be in [0, 1), got "
                             f"{self.min_manipulability!r}")
        if self.unreachable_policy not in UNREACHABLE_POLICIES:
            raise ValueError(f"SafetyEnvelopeConfig.unreachable_policy must be one of {UNREACHABLE_POLICIES}, got "
                             f"{self.unreachable_policy!r}")
        _positive("relative_dynamics_factor", self.relative_dynamics_factor, 1.0)
        if not (0.0 <= self.gripper_min_width_m < self.gripper_max_width_m <= 0.08):
            raise ValueError(f"SafetyEnvelopeConfig.gripper_min_width_m/gripper_max_width_m must satisfy "
                             f"0 <= min < max <= 0.08 m, got {self.gripper_min_width_m!r}, "
                             f"{self.gripper_max_width_m!r}")
        object.__setattr__(self, "lower_m", lo)
        object.__setattr__(self, "upper_m", hi)
        object.__setattr__(self, "arm_lower_m", alo)
        object.__setattr__(self, "arm_upper_m", ahi)
        object.__setattr__(self, "joint_min_rad", jmin)
        object.__setattr__(self, "joint_max_rad", jmax)


class InterventionCounter:
    """Thread-safe named counters of every envelope intervention (``clamped_workspace``, ``rejected_jump``...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more interventions of kind ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of every counter (name -> count)."""
        with self._lock:
            return dict(self._counts)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]


def quaternion_angle_rad(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """Rotation angle between two unit quaternions (x, y, z, w), in [0, pi]."""
    d = abs(float(np.dot(q_a, q_b)))
    return 2.0 * float(np.arccos(min(1.0, d)))


def braking_speed(distance, acceleration, period_s):
    """Largest speed from which discrete braking still stops within ``distance``.

    Steps of one period ``T``, each slowing by ``a T``, stop within ``d`` (this step included) from
    ``a (sqrt(2.25 T^2 + 2 d / a) - 1.5 T)``. Consecutive values along a braking approach differ by less than
    ``a T``, so braking by it never exceeds the acceleration limit.

    Args:
        distance: Room left before the limit, ``d`` (m or rad; scalar or array, elementwise).
        acceleration: Deceleration limit ``a`` (m/s^2 or rad/s^2).
        period_s: Control period ``T`` (s).

    Returns:
        The speed bound (m/s or rad/s), shaped like ``distance``.
    """
    t = period_s
    return acceleration * (np.sqrt(2.25 * t * t + 2.0 * np.asarray(distance) / acceleration) - 1.5 * t)


def slerp(q_a: np.ndarray, q_b: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical interpolation from ``q_a`` (fraction 0) to ``q_b`` (fraction 1) along the short arc."""
    q_b = q_b if np.dot(q_a, q_b) >= 0.0 else -q_b
    d = min(1.0, float(np.dot(q_a, q_b)))
    theta = np.arccos(d)
    if theta < 1e-9:
        out = q_a + fraction * (q_b - q_a)
    else:
        out = (np.sin((1.0 - fraction) * theta) * q_a + np.sin(fraction * theta) * q_b) / np.sin(theta)
    return out / np.linalg.norm(out)


@dataclass(frozen=True)
class CartesianCommand:
    """One end-effector command that satisfies the envelope (fr3_link0, m, x-y-z-w quaternion)."""

    position_m: np.ndarray
    quaternion_xyzw: np.ndarray
    velocity_m_s: np.ndarray
    """Feed-forward translational velocity (m/s) at the target, within ``max_speed_m_s``."""
    step_velocity_m_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """(position - previous position) / period: the commanded speed, used to limit the acceleration (m/s)."""


class SafetyEnvelope:
    """Applies :class:`SafetyEnvelopeConfig` to chunks (reject) and to each command (clamp), counting each."""

    def __init__(self, config: SafetyEnvelopeConfig, counter: InterventionCounter | None = None) -> None:
        self.config = config
        self.counter = counter if counter is not None else InterventionCounter()

    # -- chunks: reject ---------------------------------------------------------------------------------------------
    def check_chunk(self, chunk: ActionChunk, reference_position_m: np.ndarray | None = None,
                    reference_quaternion_xyzw: np.ndarray | None = None,
                    reference_joints_rad: np.ndarray | None = None) -> None:
        """Reject a chunk whose consecutive targets jump (and count ``rejected_jump``).

        Args:
            chunk: The chunk to check.
            reference_position_m: Optional (3,) TCP position commanded now (m); the first step must be near it.
            reference_quaternion_xyzw: Optional (4,) TCP orientation commanded now (x, y, z, w).
            reference_joints_rad: Optional (7,) joints commanded now (rad), for joint chunks.

        Raises:
            ChunkRejectedError: two consecutive targets differ by more than ``max_target_jump_m`` (position) or
                ``max_target_jump_rad`` (orientation or joint).
        """
        c = self.config
        try:
            if chunk.is_cartesian:
                pos = chunk.positions_m
                quat = chunk.quaternions_xyzw
                if reference_position_m is not None:
                    pos = np.vstack([reference_position_m, pos])
                if reference_quaternion_xyzw is not None:
                    quat = np.vstack([reference_quaternion_xyzw, quat])
                steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
                if steps.size and steps.max() > c.max_target_jump_m:
                    i = int(np.argmax(steps))
                    raise ChunkRejectedError(f"jump: targets {i} and {i + 1} (counting the current target as 0 when "
                                             f"given) are {steps[i]:.3f} m apart, max_target_jump_m is "
                                             f"{c.max_target_jump_m} m")
                dots = np.clip(np.abs(np.einsum("nd,nd->n", quat[:-1], quat[1:])), 0.0, 1.0)
                angles = 2.0 * np.arccos(dots)
                if angles.size and angles.max() > c.max_target_jump_rad:
                    i = int(np.argmax(angles))
                    raise ChunkRejectedError(f"jump: orientations {i} and {i + 1} differ by {angles[i]:.3f} rad, "
                                             f"max_target_jump_rad is {c.max_target_jump_rad} rad")
            else:
                q = chunk.joint_positions_rad
                if reference_joints_rad is not None:
                    q = np.vstack([reference_joints_rad, q])
                steps = np.abs(np.diff(q, axis=0)).max(axis=1) if len(q) > 1 else np.zeros(0)
                if steps.size and steps.max() > c.max_target_jump_rad:
                    i = int(np.argmax(steps))
                    raise ChunkRejectedError(f"jump: joint targets {i} and {i + 1} differ by {steps[i]:.3f} rad, "
                                             f"max_target_jump_rad is {c.max_target_jump_rad} rad")
        except ChunkRejectedError:
            self.counter.add("rejected_jump")
            raise

    # -- commands: clamp --------------------------------------------------------------------------------------------
    def clamp_cartesian(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray, previous: CartesianCommand,
                        period_s: float, velocity_m_s: np.ndarray | None = None) -> CartesianCommand:
        """The command closest to the target that the limits allow from ``previous`` (one period later).

        In order: the target is clipped into the box; the commanded velocity ``(p - previous) / period`` changes by
        at most ``max_acceleration_m_s2 * period``, is at most ``max_speed_m_s``, slows down towards the target so
        that it can stop there (``|v| <= hypot(v_ff, braking_speed(d))``) and, per axis, towards a wall it could not
        stop before (``braking_speed(d_wall)``). Containment never overrides these limits: a ``previous`` outside
        the box (an
        arm switched on outside it, a measured pose after a stop) moves back in at the limited rate; one inside
        stays inside (a final clip only removes the discretisation overshoot at a wall, counted).
        """
        c = self.config
        pos = np.asarray(position_m, dtype=np.float64)
        quat = np.asarray(quaternion_xyzw, dtype=np.float64)
        if pos.shape != (3,) or quat.shape != (4,) or not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            raise ChunkRejectedError(f"a command needs a finite (3,) position and (4,) quaternion, "
                                     f"got {pos!r}, {quat!r}")
        norm = np.linalg.norm(quat)
        if norm < 0.5:
            raise ChunkRejectedError(f"a command quaternion must be a unit quaternion, got norm {norm:.3g}")
        quat = quat / norm
        vel_ff = np.zeros(3) if velocity_m_s is None else np.asarray(velocity_m_s, dtype=np.float64)
        if vel_ff.shape != (3,) or not np.all(np.isfinite(vel_ff)):
            vel_ff = np.zeros(3)
        speed_ff = float(np.linalg.norm(vel_ff))
        if speed_ff > c.max_speed_m_s:
            vel_ff = vel_ff * (c.max_speed_m_s / speed_ff)
            speed_ff = c.max_speed_m_s
        boxed = np.clip(pos, c.lower_m, c.upper_m)
        if np.any(boxed != pos):
            self.counter.add("clamped_workspace")
        p_prev = previous.position_m
        v_prev = previous.step_velocity_m_s
        a_step = c.max_acceleration_m_s2 * period_s
        v = (boxed - p_prev) / period_s
        dv = v - v_prev
        dv_norm = float(np.linalg.norm(dv))
        if dv_norm > a_step:
            self.counter.add("clamped_acceleration")
            v = v_prev + dv * (a_step / dv_norm)
        speed = float(np.linalg.norm(v))
        distance = float(np.linalg.norm(boxed - p_prev))
        stop_speed = min(c.max_speed_m_s, float(np.hypot(speed_ff, braking_speed(distance, c.max_acceleration_m_s2,
                                                                                   period_s))))
        if speed > stop_speed:
            if speed > c.max_speed_m_s:
                self.counter.add("clamped_speed")
            v = v * (stop_speed / speed)
        inside = bool(np.all(p_prev >= c.lower_m - 1e-9) and np.all(p_prev <= c.upper_m + 1e-9))
        if inside:
            room = np.where(v < 0.0, p_prev - c.lower_m, c.upper_m - p_prev)
            cap = braking_speed(np.maximum(room, 0.0), c.max_acceleration_m_s2, period_s)
            v = np.clip(v, -cap, cap)
        commanded = p_prev + v * period_s
        if inside:
            boxed_cmd = np.clip(commanded, c.lower_m, c.upper_m)
            if np.any(boxed_cmd != commanded):
                self.counter.add("clamped_workspace_overshoot")
                commanded = boxed_cmd
        angle = quaternion_angle_rad(previous.quaternion_xyzw, quat)
        max_angle = c.max_rotation_speed_rad_s * period_s
        if angle > max_angle:
            self.counter.add("clamped_rotation_speed")
            quat = slerp(previous.quaternion_xyzw, quat, max_angle / angle)
        elif np.dot(quat, previous.quaternion_xyzw) < 0.0:
            quat = -quat
        # No feed-forward velocity pointing out of the box faster than the arm could still stop before the wall.
        room = np.where(vel_ff < 0.0, commanded - c.lower_m, c.upper_m - commanded)
        cap = braking_speed(np.maximum(room, 0.0), c.max_acceleration_m_s2, period_s)
        vel_ff = np.clip(vel_ff, -cap, cap)
        return CartesianCommand(commanded, quat, vel_ff, (commanded - p_prev) / period_s)

    def clamp_joints(self, joints_rad: np.ndarray, previous_rad: np.ndarray, period_s: float) -> np.ndarray:
        """Joint targets inside the margin-shrunk limits and within ``max_joint_speed_rad_s`` of ``previous_rad``."""
        c = self.config
        q = np.asarray(joints_rad, dtype=np.float64)
        if q.shape != (ARM_DOF,) or not np.all(np.isfinite(q)):
            raise ChunkRejectedError(f"a joint command needs {ARM_DOF} finite values (rad), got {q!r}")
        limited = np.clip(q, c.joint_min_rad, c.joint_max_rad)
        if np.any(limited != q):
            self.counter.add("clamped_joint_limit")
        max_step = c.max_joint_speed_rad_s * period_s
        step = limited - previous_rad
        if np.any(np.abs(step) > max_step):
            self.counter.add("clamped_joint_speed")
            limited = previous_rad + np.clip(step, -max_step, max_step)
        return np.clip(limited, c.joint_min_rad, c.joint_max_rad)

    def clamp_gripper_width(self, width_m: float) -> float:
        """Gripper width target clamped to [``gripper_min_width_m``, ``gripper_max_width_m``] (m).

        Raises:
            ChunkRejectedError: ``width_m`` is not finite.
        """
        c = self.config
        w = float(width_m)
        if not np.isfinite(w):
            raise ChunkRejectedError(f"a gripper width must be finite (m), got {width_m!r}")
        clamped = min(max(w, c.gripper_min_width_m), c.gripper_max_width_m)
        if clamped != w:
            self.counter.add("clamped_gripper_width")
        return clamped

    # -- measured state ---------------------------------------------------------------------------------------------
    def joints_outside_limits(self, measured_rad: np.ndarray) -> list[int]:
        """Indices (0-based) of measured joints beyond the margin-shrunk limits."""
        q = np.asarray(measured_rad, dtype=np.float64)
        c = self.config
        return [int(i) for i in np.flatnonzero((q < c.joint_min_rad) | (q > c.joint_max_rad))]

    def contains_cartesian(self, command: CartesianCommand, previous: CartesianCommand, period_s: float,
                           tolerance: float = 1e-9) -> bool:
        """Whether ``command`` is inside the box and within the speed limits of ``previous`` (for checks)."""
        c = self.config
        ok_box = bool(np.all(command.position_m >= c.lower_m - tolerance)
                      and np.all(command.position_m <= c.upper_m + tolerance))
        ok_step = float(np.linalg.norm(command.position_m - previous.position_m)) <= \
            c.max_speed_m_s * period_s + tolerance
        ok_rot = quaternion_angle_rad(command.quaternion_xyzw, previous.quaternion_xyzw) <= \
            c.max_rotation_speed_rad_s * period_s + 1e-6
        return ok_box and ok_step and ok_rot
