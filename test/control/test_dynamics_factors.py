"""Per-motion acceleration / jerk factors and the consistent feed-forward of joint motions (pure, no franky-sim)."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.control.command_gate import BRAKING_FLOOR_MARGIN, FEED_FORWARD_ACCELERATION_SHARE, CommandGate
from gpc_ros.control.envelope import InterventionCounter, SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.joint_guard import JointSpaceGuard
from gpc_ros.control.kinematics import FR3Kinematics

KINEMATICS = FR3Kinematics()
Q_HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
Q_READY = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])


def _gate(**fields) -> CommandGate:
    config = SafetyEnvelopeConfig(**fields)
    counter = InterventionCounter()
    return CommandGate(SafetyEnvelope(config, counter), JointSpaceGuard(config, KINEMATICS, counter), "joint")


def _worst(q: np.ndarray, joint_limit: float) -> tuple[float, float]:
    """(sum_i a |J_lin,i|, sum_i a |J_ang,i|) at joint acceleration ``joint_limit`` on every joint."""
    columns = np.abs(KINEMATICS.jacobian(q))
    return (joint_limit * float(np.linalg.norm(columns[:3], axis=0).sum()),
            joint_limit * float(np.linalg.norm(columns[3:], axis=0).sum()))


@pytest.mark.parametrize("q", [Q_HOME, Q_READY])
@pytest.mark.parametrize("fields, binds", [
    ({}, "floor"),  # 2 m/s^2, 5 rad/s^2 on 5 rad/s^2 joints: 0.14-0.17 < the floor 1.25 x 1 / 5
    ({"max_acceleration_m_s2": 8.0, "max_rotation_acceleration_rad_s2": 30.0}, "limit"),
    ({"max_acceleration_m_s2": 100.0, "max_rotation_acceleration_rad_s2": 100.0}, "one"),
    ({"braking_deceleration_rad_s2": 4.5}, "one"),  # the floor above franky's limit: capped at 1
])
def test_the_acceleration_factor_keeps_the_tcp_within_its_limits_or_sits_at_the_floor(q, fields, binds):
    gate = _gate(**fields)
    c = gate.envelope.config
    f_acc, f_jerk = gate.joint_dynamics_factors(q)
    lin, ang = _worst(q, f_acc * c.max_joint_acceleration_rad_s2)
    floor = min(1.0, BRAKING_FLOOR_MARGIN * c.braking_deceleration_rad_s2 / c.max_joint_acceleration_rad_s2)
    assert 0.0 < f_jerk <= 1.0
    if binds == "floor":
        assert f_acc == pytest.approx(floor)
        assert lin > c.max_acceleration_m_s2 or ang > c.max_rotation_acceleration_rad_s2  # what the floor costs
    elif binds == "limit":
        assert floor < f_acc < 1.0
        assert max(lin / c.max_acceleration_m_s2, ang / c.max_rotation_acceleration_rad_s2) == pytest.approx(1.0)
    else:
        assert f_acc == 1.0


def test_the_factors_follow_the_limits_read_back_from_franky():
    gate = _gate(max_acceleration_m_s2=4.0, max_rotation_acceleration_rad_s2=15.0)
    before, _ = gate.joint_dynamics_factors(Q_HOME)
    gate.planner_joint_acceleration_limit_rad_s2 = np.full(7, 2.5)  # franky capped the joints at half
    after, _ = gate.joint_dynamics_factors(Q_HOME)
    assert after == pytest.approx(min(1.0, 2.0 * before))


def _feed_forward(gate, velocity, displacement, start_velocity, arrival_s=None, limit=1.0):
    v, d, v0 = (np.asarray(x, dtype=np.float64) for x in (velocity, displacement, start_velocity))
    return gate._consistent_feed_forward(v, d, v0, 0.2, np.full(7, limit), arrival_s)


def _uniform_acceleration_rad_s2(velocity, displacement, start_velocity, duration_s):
    """(7,) the acceleration of each joint's uniform profile, and the distance it covers minus its displacement."""
    v, d, v0 = (np.asarray(x, dtype=np.float64) for x in (velocity, displacement, start_velocity))
    return (v - v0) / duration_s, 0.5 * (v + v0) * duration_s - d


SHARE = FEED_FORWARD_ACCELERATION_SHARE * 1.0  # of 5 rad/s^2 x factor 0.2 (the factor passed in)


@pytest.mark.parametrize("velocity, displacement, start_velocity, arrival_s", [
    (0.1, 0.006, 0.1, 0.06),  # on track: the plan's velocity, due when the target is
    (0.1, 0.006, 0.1, None),  # the same without a due time (least squares)
    (0.05, 0.0005, 0.0, 0.02),  # from rest, 0.5 mrad ahead: not in 20 ms, later and slower
    (0.05, -0.001, 0.002, 0.06),  # the arm ahead of its plan, nearly at rest: back towards the target
    (0.09, 0.0, 0.0, 0.06),  # no displacement, at rest: stays
])
def test_every_joint_reaches_its_target_with_its_feed_forward_in_one_duration(velocity, displacement, start_velocity,
                                                                           arrival_s):
    gate = _gate()
    out, duration = _feed_forward(gate, np.full(7, velocity), np.full(7, displacement), np.full(7, start_velocity),
                                  arrival_s)
    acceleration, miss = _uniform_acceleration_rad_s2(out, np.full(7, displacement), np.full(7, start_velocity),
                                                      duration)
    assert np.all(np.abs(acceleration) <= SHARE * (1 + 1e-9))
    np.testing.assert_allclose(miss, 0.0, atol=1e-12)
    if displacement == pytest.approx(velocity * 0.06) and start_velocity == velocity:
        np.testing.assert_allclose(out, velocity, rtol=0.02)  # on track: the plan's velocity
        assert duration == pytest.approx(0.06, rel=0.02)


def test_joints_whose_windows_overlap_three_periods_ahead_get_velocities_for_one_common_duration():
    """Measured on franky-sim (the motion before a 10 Hz stop, targets one period ahead): joint 7 at 0.153 rad/s only
    3.9 mrad behind its target cannot arrive later than ~28 ms at 1 rad/s^2; joint 2 at 0.039 rad/s, 1.6 mrad behind,
    not before ~31 ms: no common duration without a loop (that motion falls back). The same joints three periods
    behind their targets can both arrive in 66-137 ms: one duration, every joint on a uniform acceleration."""
    gate = _gate()
    d = np.array([2.17, 1.645, 2.019, 1.956, -0.375, -0.588, 3.857]) * 1e-3
    v0 = np.array([0.067, 0.039, 0.059, 0.054, -0.001, -0.001, 0.153])
    plan = np.array([0.094, 0.067, 0.087, 0.083, -0.01, -0.016, 0.18])
    assert _feed_forward(gate, plan, d, v0, 0.02, limit=0.43)[1] is None
    out, duration = _feed_forward(gate, plan, 3.0 * d, v0, 0.06, limit=0.43)
    assert 0.06 < duration < 0.14
    acceleration, miss = _uniform_acceleration_rad_s2(out, 3.0 * d, v0, duration)
    assert np.all(np.abs(acceleration) <= SHARE * (1 + 1e-9))
    np.testing.assert_allclose(miss, 0.0, atol=1e-12)
    assert np.all(out * v0 >= 0.0) and np.all(np.abs(out) <= 0.43)


@pytest.mark.parametrize("displacement, start_velocity", [
    (-0.001, 0.05),  # the arm ahead of its plan, moving on
    (0.0005, 0.3),  # a joint at a clamped target (a limit) it cannot stop before
])
def test_a_joint_that_would_turn_around_falls_back_to_the_time_optimal_plan(displacement, start_velocity):
    gate = _gate()
    out, duration = _feed_forward(gate, np.full(7, 0.05), np.full(7, displacement), np.full(7, start_velocity), 0.06)
    assert duration is None  # no minimum time: the planner brakes at its own acceleration
    expected = gate._reachable_feed_forward(np.full(7, 0.05), np.full(7, displacement), np.full(7, start_velocity),
                                            0.2)
    np.testing.assert_allclose(out, expected)


def test_without_a_feed_forward_the_velocities_stay_zero():
    out, duration = _feed_forward(_gate(), np.zeros(7), np.full(7, 0.01), np.full(7, 0.1), 0.06)
    assert not np.any(out) and duration == 0.06


def test_a_streamed_joint_motion_carries_the_factors():
    gate = _gate()
    gate.reset_to(Q_HOME)
    motion, cmd = gate.joint_motion(Q_HOME + 0.01, 0.02, np.full(7, 0.5), arrival_s=0.06)
    factor = motion.relative_dynamics_factor
    assert (factor.acceleration, factor.jerk) == pytest.approx(gate.last_dynamics_factors)
    assert factor.acceleration == pytest.approx(0.25)  # the floor: 1.25 x 1 rad/s^2 of 5
    step = cmd.joint_positions_rad - Q_HOME  # 2 mrad (the guard's acceleration limit from rest)
    first = motion.waypoints[0]
    duration = gate.last_arrival_s
    assert first.minimum_time.to_sec() == pytest.approx(duration, abs=1e-3)
    np.testing.assert_allclose(np.asarray(first.target.velocity), 2.0 * step / duration, rtol=1e-9)  # from rest
    assert np.all(np.abs(np.asarray(first.target.velocity)) / duration <= FEED_FORWARD_ACCELERATION_SHARE * 1.25 + 1e-9)


def test_a_start_faster_than_the_planner_ever_commands_is_braked_at_franky_s_full_limits():
    """franky-sim's report to a starved client (test_driver_starved.py): a joint at 11.7 rad/s took seconds to brake
    at the per-motion 1.25 rad/s^2; such a start gets franky's full acceleration and jerk."""
    gate = _gate()
    gate.reset_to(Q_HOME)
    start_velocity = np.zeros(7)
    start_velocity[1] = 1.2  # > 1.1 x the 1 rad/s limit
    motion, _ = gate.joint_motion(Q_HOME + 0.01, 0.02, np.full(7, 0.1), Q_HOME, start_velocity, arrival_s=0.06)
    assert (motion.relative_dynamics_factor.acceleration, motion.relative_dynamics_factor.jerk) == (1.0, 1.0)
    start_velocity[1] = 0.9  # one the planner commands: the per-motion factors
    # (within TCP limits that allow it: 0.44 m/s, 0.9 rad/s; at the defaults a start over the TCP limits is braked at
    # franky's full limits too, test_a_start_over_the_tcp_speed_limit_is_braked_at_franky_s_full_limits)
    gate = _gate(max_speed_m_s=0.5, max_rotation_speed_rad_s=1.5)
    gate.reset_to(Q_HOME)
    motion, _ = gate.joint_motion(Q_HOME + 0.02, 0.02, np.full(7, 0.1), Q_HOME, start_velocity, arrival_s=0.06)
    assert motion.relative_dynamics_factor.acceleration == pytest.approx(0.25)


def test_joint_motions_keep_franky_s_full_jerk():
    """franky starts every motion from the reported ddq_d; a starved client gets franky-sim's derivative of the
    *measured* velocity there (tens of rad/s^2, docs/driver.md *A starved client*). The planner sheds a start
    acceleration above the motion's limit at its jerk limit and the joint gains a^2 / 2j on the way: at the ~800
    rad/s^3 a TCP jerk factor gave each joint (0.16 at the defaults) 0.56 rad/s from 30 rad/s^2. So the jerk factor is
    1 (franky's joint jerk limit) at every pose and limit, while the acceleration factor stays the TCP bound's."""
    for fields in ({}, {"max_jerk_m_s3": 10.0, "max_rotation_jerk_rad_s3": 10.0}):
        gate = _gate(**fields)
        gate.reset_to(Q_HOME)
        for q in (Q_HOME, Q_READY):
            f_acc, f_jerk = gate.joint_dynamics_factors(q)
            assert f_jerk == 1.0 and f_acc == pytest.approx(0.25)
        motion, _ = gate.joint_motion(Q_HOME + 0.01, 0.02, np.full(7, 0.1), Q_HOME, np.zeros(7), 0.06)
        assert (motion.relative_dynamics_factor.acceleration, motion.relative_dynamics_factor.jerk) == \
            pytest.approx((0.25, 1.0))


def test_a_start_over_the_tcp_speed_limit_is_braked_harder():
    """Recorded (issue 9, seed 23): joint 4 held 0.64 rad/s while joints 2 and 6, which had partly cancelled its TCP
    motion, slowed; the commanded TCP ran at 1.03-1.07 x the limit for ~100 ms while the lowered speed factor braked
    joint 4 at the per-motion 1.25 rad/s^2. A start over the TCP limits now brakes harder (the gate's braking
    factors: within ``braking_acceleration_ratio`` x the TCP acceleration limits; franky's full limits until session
    18); one below them keeps the per-motion factors."""
    gate = _gate()
    c = gate.envelope.config
    lin = KINEMATICS.jacobian(Q_HOME)[:3, 3]  # joint 4's column: TCP m/s per rad/s
    for ratio, full in ((1.1, True), (0.9, False)):
        gate.reset_to(Q_HOME)
        start_velocity = np.zeros(7)
        start_velocity[3] = -ratio * c.max_speed_m_s / float(np.linalg.norm(lin))
        before = gate.envelope.counter["harder_braking_overspeed"]
        motion, _ = gate.joint_motion(Q_HOME + 0.001, 0.02, np.full(7, 0.05), Q_HOME, start_velocity, arrival_s=0.12)
        factors = (motion.relative_dynamics_factor.acceleration, motion.relative_dynamics_factor.jerk)
        harder = gate.braking_dynamics_factors(gate.last.joint_positions_rad)
        assert harder[0] > gate.joint_dynamics_factors(gate.last.joint_positions_rad)[0]
        assert (factors == pytest.approx(harder)) is full, (ratio, factors)
        assert gate.envelope.counter["harder_braking_overspeed"] - before == int(full)
