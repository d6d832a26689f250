"""The safety envelope: tables of clamp/reject cases and a property test at the one boundary that builds franky
motions (10,000 random chunks, including NaN, inf, huge values, wrong shapes, jumps, targets outside the box)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.command_gate import BRAKING_FLOOR_MARGIN, MIN_SPEED_FACTOR, CommandGate
from gpc_ros.control.envelope import (
    CartesianCommand,
    InterventionCounter,
    SafetyEnvelope,
    SafetyEnvelopeConfig,
    quaternion_angle_rad,
)
from gpc_ros.control.joint_guard import JointCommand, JointSpaceGuard
from gpc_ros.control.kinematics import FR3Kinematics
from gpc_ros.control.timing import SeamBlender, TimingConfig, sample

Q_DOWN = np.array([1.0, 0.0, 0.0, 0.0])
HOME = np.array([0.55, 0.0, 0.5])
PERIOD_S = 0.02


def envelope() -> SafetyEnvelope:
    return SafetyEnvelope(SafetyEnvelopeConfig(), InterventionCounter())


def at(position, quat=Q_DOWN) -> CartesianCommand:
    return CartesianCommand(np.asarray(position, float), np.asarray(quat, float), np.zeros(3))


@pytest.mark.parametrize("target, speed, expected, counter", [
    ([0.55, 0.0, 0.5], 0.0, [0.55, 0.0, 0.5], None),
    ([0.55, 0.0, 0.504], 0.2, [0.55, 0.0, 0.504], None),                  # 4 mm in 20 ms = 0.2 m/s: allowed
    ([0.55, 0.0, 0.6], 0.25, [0.55, 0.0, 0.505], "clamped_acceleration+clamped_speed"),  # 0.25 m/s * 20 ms = 5 mm
    ([0.55, 0.0, 0.6], 0.0, [0.55, 0.0, 0.5008], "clamped_acceleration"),  # from rest: 2 m/s^2 * 20 ms = 0.04 m/s
    ([0.55, 0.0, -5.0], -0.25, [0.55, 0.0, 0.495], "clamped_workspace+clamped_acceleration+clamped_speed"),
])
def test_translation_is_limited_per_period(target, speed, expected, counter):
    """``speed``: the previous command's vertical velocity (m/s), also the plan's feed-forward velocity."""
    env = envelope()
    moving = CartesianCommand(HOME, Q_DOWN, np.zeros(3), np.array([0.0, 0.0, speed]))
    cmd = env.clamp_cartesian(np.array(target), Q_DOWN, moving, PERIOD_S, velocity_m_s=np.array([0.0, 0.0, speed]))
    np.testing.assert_allclose(cmd.position_m, expected, atol=1e-9)
    assert env.counter.snapshot() == ({} if counter is None else {name: 1 for name in counter.split("+")})


def test_targets_outside_the_box_are_clamped_to_its_wall_and_counted():
    env = envelope()
    wall = at([0.55, 0.399, 0.5])
    for _ in range(20):
        wall = env.clamp_cartesian(np.array([0.55, 3.0, 0.5]), Q_DOWN, wall, PERIOD_S)
        assert wall.position_m[1] <= 0.40
    np.testing.assert_allclose(wall.position_m, [0.55, 0.40, 0.5], atol=1e-4)
    assert env.counter["clamped_workspace"] == 20


def test_acceleration_is_limited_and_the_arm_brakes_before_a_wall():
    env = envelope()
    cfg = env.config
    cmd = at(HOME)
    speeds = []
    for _ in range(200):  # ask for the far wall at full speed; it must arrive without crossing it
        previous = cmd
        cmd = env.clamp_cartesian(np.array([0.55, 5.0, 0.5]), Q_DOWN, previous, PERIOD_S)
        dv = np.linalg.norm(cmd.step_velocity_m_s - previous.step_velocity_m_s)
        assert dv <= cfg.max_acceleration_m_s2 * PERIOD_S + 1e-9
        assert cmd.position_m[1] <= cfg.upper_m[1] + 1e-12
        speeds.append(np.linalg.norm(cmd.step_velocity_m_s))
    assert max(speeds) == pytest.approx(cfg.max_speed_m_s)
    assert cmd.position_m[1] > cfg.upper_m[1] - 0.002 and speeds[-1] < 0.05
    assert env.counter["clamped_workspace_overshoot"] <= 2  # only the discretisation at the very end


def test_a_command_outside_the_box_moves_back_in_within_the_limits():
    """Containment never bypasses the speed limit: a previous command outside (arm switched on there) comes back
    at the limited rate instead of jumping to the wall (the 512 mm jump in issue 9)."""
    env = envelope()
    cmd = at([0.55, 0.0, 1.2])  # 0.5 m above the box
    for _ in range(20):
        previous = cmd
        cmd = env.clamp_cartesian(HOME, Q_DOWN, previous, PERIOD_S)
        assert np.linalg.norm(cmd.position_m - previous.position_m) <= env.config.max_speed_m_s * PERIOD_S + 1e-12
    assert cmd.position_m[2] < 1.2 and cmd.position_m[2] > 0.70


def test_rotation_is_limited_per_period():
    env = envelope()
    half = np.pi / 4  # 90 degree turn about z, asked for in one period
    q_turn = np.array([np.cos(half) * 1.0, np.sin(half), 0.0, 0.0])
    cmd = env.clamp_cartesian(HOME, q_turn, at(HOME), PERIOD_S)
    assert quaternion_angle_rad(cmd.quaternion_xyzw, Q_DOWN) == pytest.approx(1.0 * PERIOD_S, rel=1e-6)
    assert env.counter["clamped_rotation_speed"] == 1


def test_feed_forward_velocity_is_limited_and_never_points_out_of_the_box():
    env = envelope()
    cmd = at([0.55, 0.397, 0.5])
    for _ in range(10):
        cmd = env.clamp_cartesian(np.array([0.55, 0.40, 0.5]), Q_DOWN, cmd, PERIOD_S,
                                  velocity_m_s=np.array([3.0, 3.0, 0.0]))
        assert np.linalg.norm(cmd.velocity_m_s) <= 0.25 + 1e-12
    assert cmd.position_m[1] == pytest.approx(0.40, abs=1e-4) and abs(cmd.velocity_m_s[1]) < 0.01


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0]), np.array([np.inf, 0, 0]), np.zeros(4)])
def test_non_finite_or_misshapen_commands_are_refused(bad):
    with pytest.raises(ChunkRejectedError):
        envelope().clamp_cartesian(bad, Q_DOWN, at(HOME), PERIOD_S)


def test_joint_targets_stay_inside_limits_minus_margin_and_speed():
    env = envelope()
    cfg = env.config
    previous = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
    q = env.clamp_joints(previous + np.array([10.0, 0, 0, 0, 0, 0, 0]), previous, PERIOD_S)
    assert q[0] == pytest.approx(cfg.max_joint_speed_rad_s * PERIOD_S)
    q = env.clamp_joints(np.array(cfg.joint_upper_rad) + 1.0, np.array(cfg.joint_upper_rad) - 0.1, 10.0)
    np.testing.assert_allclose(q, np.array(cfg.joint_upper_rad) - cfg.joint_limit_margin_rad)
    # 10 rad is beyond the speed limit too
    assert env.counter["clamped_joint_limit"] == 2 and env.counter["clamped_joint_speed"] == 1


def test_measured_joints_beyond_the_margin_are_reported():
    env = envelope()
    q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
    assert env.joints_outside_limits(q) == []
    q[3] = -0.2  # joint 4 upper limit -0.1518, margin 0.1
    assert env.joints_outside_limits(q) == [3]


@pytest.mark.parametrize("width, expected", [(0.04, 0.04), (-1.0, 0.0), (0.5, 0.08)])
def test_gripper_width_is_clamped(width, expected):
    assert envelope().clamp_gripper_width(width) == pytest.approx(expected)


def test_a_jump_inside_a_chunk_or_from_the_current_target_rejects_the_chunk():
    env = envelope()
    pos = np.tile(HOME, (4, 1))
    pos[2, 0] += 0.2
    chunk = ActionChunk.from_arrays(0.0, 0.1, positions_m=pos, quaternions_xyzw=np.tile(Q_DOWN, (4, 1)))
    with pytest.raises(ChunkRejectedError, match="jump: targets 2 and 3"):
        env.check_chunk(chunk, HOME, Q_DOWN)
    far = ActionChunk.from_arrays(0.0, 0.1, positions_m=np.tile(HOME + [0, 0.3, 0], (2, 1)),
                                  quaternions_xyzw=np.tile(Q_DOWN, (2, 1)))
    with pytest.raises(ChunkRejectedError, match="jump: targets 0 and 1"):
        env.check_chunk(far, HOME, Q_DOWN)
    assert env.counter["rejected_jump"] == 2


@pytest.mark.parametrize("field, value", [
    ("workspace_min_m", (0.8, -0.4, 0.05)), ("workspace_max_m", (1.0, 0.4)), ("max_speed_m_s", 0.0),
    ("relative_dynamics_factor", 1.5), ("gripper_max_width_m", 0.2), ("joint_limit_margin_rad", 5.0),
    ("max_target_jump_m", float("nan")), ("arm_points_max_m", (-1.0, 0.6, 1.1)), ("unreachable_policy", "ignore"),
    ("joint_halt_margin_rad", 0.2), ("max_acceleration_m_s2", -1.0), ("braking_acceleration_ratio", 0.5),
])
def test_envelope_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field.split("_m")[0]):
        SafetyEnvelopeConfig(**{field: value})


def test_only_the_command_gate_builds_franky_motions():
    """The property below checks the gate; this makes sure nothing else in gpc_ros can bypass it."""
    root = Path(__file__).resolve().parents[2] / "gpc_ros"
    builders = {"CartesianWaypointMotion", "JointWaypointMotion", "CartesianMotion", "JointMotion",
                "CartesianVelocityMotion", "JointVelocityMotion", "CartesianImpedanceMotion",
                "CartesianWaypoint", "JointWaypoint", "CartesianStopMotion", "JointStopMotion"}
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in builders:
                if path.name != "command_gate.py":
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


# --- property: nothing outside the envelope ever reaches franky ---------------------------------------------------

WILD_VALUES = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 5.0, -5.0]


@st.composite
def raw_chunks(draw):
    """Loose chunk input: hypothesis picks the structure (shape, scale, where the wild values go, dt, gripper);
    a seeded generator fills the bulk (cheap draws keep 10,000 examples fast)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 6))
    shape_pos = draw(st.sampled_from([(n, 3), (n, 3), (n, 3), (n, 2), (n,), (n + 1, 3)]))
    scale = draw(st.sampled_from([0.001, 0.01, 0.1, 1.0, 100.0]))
    pos = HOME[: shape_pos[-1]] + scale * rng.standard_normal(shape_pos) if len(shape_pos) == 2 \
        else rng.standard_normal(shape_pos)
    quat = np.tile(Q_DOWN, (n, 1)) + draw(st.sampled_from([0.0, 0.05, 1.0])) * rng.standard_normal((n, 4))
    width = None if draw(st.booleans()) else rng.uniform(-0.1, 0.2, n)
    for arr in (pos, quat) + (() if width is None else (width,)):
        for _ in range(draw(st.integers(0, 2))):  # inject wild values at drawn places
            arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from(WILD_VALUES))
    dt = draw(st.sampled_from([0.02, 0.05, 0.1, 0.0, -0.1, 1e-300, np.nan, np.inf, 100.0]))
    return pos, quat, dt, width


PROPERTY_SETTINGS = dict(deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])
CASES = dict(chunks=st.lists(raw_chunks(), min_size=1, max_size=3), period_s=st.sampled_from([0.02, 1 / 30, 0.1]),
             start=st.sampled_from([HOME, np.array([0.3, 0.39, 0.1])]))


CASES["mode"] = st.sampled_from(["joint", "cartesian"])
KINEMATICS = FR3Kinematics()
SEED_JOINTS = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])


@settings(max_examples=1_000, **PROPERTY_SETTINGS)
@given(**CASES)
def test_no_command_outside_the_envelope_ever_reaches_franky(chunks, period_s, start, mode):
    with np.errstate(all="ignore"):  # wild inputs overflow in numpy before being rejected: that is the point
        _check_commands(chunks, period_s, start, mode)


@pytest.mark.slow
@settings(max_examples=10_000, **PROPERTY_SETTINGS)
@given(**CASES)
def test_no_command_outside_the_envelope_ever_reaches_franky_10k(chunks, period_s, start, mode):
    """The issue's bar: 10,000 random chunks (slow: every command runs IK and the joint-space checks; the test
    above runs 1,000 by default)."""
    with np.errstate(all="ignore"):
        _check_commands(chunks, period_s, start, mode)


def _check_commands(chunks, period_s, start, mode):
    env = envelope()
    guard = JointSpaceGuard(env.config, KINEMATICS, env.counter)
    gate = CommandGate(env, guard, mode)
    seed = KINEMATICS.inverse(start, Q_DOWN, SEED_JOINTS)
    assert seed.converged
    gate.reset_to(seed.joint_positions_rad)
    blender = SeamBlender(TimingConfig(blend_mode="crossfade", crossfade_steps=2))
    now = 0.0
    for pos, quat, dt, width in chunks:
        try:
            chunk = ActionChunk.from_arrays(now, dt, positions_m=pos, quaternions_xyzw=quat, gripper_width_m=width)
            env.check_chunk(chunk, gate.last_cartesian.position_m, gate.last_cartesian.quaternion_xyzw)
            blender.add(chunk, now)
        except ChunkRejectedError as exc:
            assert str(exc)  # rejected, and it says why
            continue
        for _ in range(3):
            previous = gate.last_cartesian
            target = sample(blender.plan, now + period_s)
            previous_joints = gate.last_joints_rad
            motion, cmd = gate.pose_motion(target.position_m, target.quaternion_xyzw, period_s,
                                           velocity_m_s=np.full(3, 1e9))
            sent = motion.waypoints[0].target  # read back what franky would execute
            cfg = env.config
            if mode == "joint":
                sent_q = np.array(sent.position)
                sent_pos, sent_quat = KINEMATICS.forward(sent_q)
                assert np.all(sent_q >= guard.command_lower_rad - 1e-9)
                assert np.all(sent_q <= guard.command_upper_rad + 1e-9)
                assert np.abs(sent_q - previous_joints).max() <= cfg.max_joint_speed_rad_s * period_s + 1e-9
                # franky's planner may run each joint up to factor * max_joint_speed_rad_s: along this motion
                # (from the last command) that keeps the TCP within its speed limits, and the target velocity
                # within the planner's limit (else franky fails with error -100).
                factor = motion.relative_dynamics_factor.velocity
                planner_limit = factor * cfg.max_joint_speed_rad_s
                assert 0.0 < factor <= 1.0
                assert np.abs(np.array(sent.velocity)).max() <= planner_limit + 1e-9
                # ... and every joint's acceleration at most the factor x its limit, which keeps the TCP's
                # acceleration (sum over the joints of |J_i| a_i) within its limits, or at the braking floor.
                acc = motion.relative_dynamics_factor.acceleration
                columns = np.abs(KINEMATICS.jacobian(sent_q))
                worst_lin = acc * cfg.max_joint_acceleration_rad_s2 * np.linalg.norm(columns[:3], axis=0).sum()
                worst_ang = acc * cfg.max_joint_acceleration_rad_s2 * np.linalg.norm(columns[3:], axis=0).sum()
                floor = min(1.0, BRAKING_FLOOR_MARGIN * cfg.braking_deceleration_rad_s2
                            / cfg.max_joint_acceleration_rad_s2)
                assert 0.0 < acc <= 1.0 and acc >= floor - 1e-12
                assert acc == pytest.approx(floor) or (worst_lin <= cfg.max_acceleration_m_s2 + 1e-9 and
                                                       worst_ang <= cfg.max_rotation_acceleration_rad_s2 + 1e-9)
                step = sent_q - previous_joints
                if np.abs(step).max() > 1e-9:
                    jac = KINEMATICS.jacobian(sent_q)
                    at_limit = step / np.abs(step).max() * planner_limit
                    assert np.linalg.norm(jac[:3] @ at_limit) <= cfg.max_speed_m_s + 1e-9 or factor == MIN_SPEED_FACTOR
                    assert np.linalg.norm(jac[3:] @ at_limit) <= cfg.max_rotation_speed_rad_s + 1e-9 or \
                        factor == MIN_SPEED_FACTOR
                    # ... and from there the arm can brake to rest inside the boxes and joint limits (braking.py).
                    assert gate.braking.brakeable(previous_joints, at_limit) or factor == MIN_SPEED_FACTOR
                sent_vel = np.zeros(3)
            else:
                sent_pos = np.array(sent.pose.end_effector_pose.translation)
                sent_quat = np.array(sent.pose.end_effector_pose.quaternion)
                sent_vel = np.array(sent.velocity.end_effector_twist.linear)
            points = KINEMATICS.check_points(cmd.joint_positions_rad)
            for name in ("elbow", "wrist"):
                assert np.all(points[name] >= cfg.arm_lower_m - 1e-9) and np.all(points[name] <= cfg.arm_upper_m + 1e-9)
            assert np.all(np.isfinite(sent_pos)) and np.all(np.isfinite(sent_quat))
            assert np.all(sent_pos >= cfg.lower_m - 1e-9) and np.all(sent_pos <= cfg.upper_m + 1e-9)
            assert np.linalg.norm(sent_pos - previous.position_m) <= cfg.max_speed_m_s * period_s + 1e-9
            assert quaternion_angle_rad(sent_quat, previous.quaternion_xyzw) <= \
                cfg.max_rotation_speed_rad_s * period_s + 1e-6
            assert np.linalg.norm(sent_vel) <= cfg.max_speed_m_s + 1e-9
            if target.gripper_width_m is not None:
                w = env.clamp_gripper_width(target.gripper_width_m)
                assert cfg.gripper_min_width_m <= w <= cfg.gripper_max_width_m
            now += period_s


def test_a_joint_at_rest_on_its_command_limit_does_not_switch_off_the_other_joints_speed_limit():
    """A joint at rest exactly on its command limit has no room (speed cap 0); 0 / 0 made the speed ratio NaN and the
    speed clamp of every *other* joint was skipped (a RuntimeWarning in test_a_joint_ramp_to_the_limit_does_not_
    deadlock, session 13)."""
    env = envelope()
    guard = JointSpaceGuard(env.config, KINEMATICS, env.counter)
    limit = env.config.max_joint_speed_rad_s
    period = 0.02
    q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785])
    q[3] = guard.command_upper_rad[3]
    previous = guard.seed(q)
    previous = JointCommand(q, np.array([0.0, limit, 0.0, 0.0, 0.0, 0.0, 0.0]), previous.tcp, previous.violation)
    target = q.copy()
    target[1] += 1.5 * limit * period  # joint 2 asked for 1.5 x its speed limit; joint 4 stays on its limit
    out = guard.limit_joint_step(target, previous, period)
    assert out[3] == q[3]
    assert abs(out[1] - q[1]) / period <= limit * (1 + 1e-9)
