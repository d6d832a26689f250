"""Per-motion acceleration / jerk factors and the reachable feed-forward of joint motions (pure, no franky-sim)."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.control.command_gate import BRAKING_FLOOR_MARGIN, CommandGate
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


@pytest.mark.parametrize("velocity, displacement, start_velocity, expected", [
    (0.05, 0.0005, 0.0, np.sqrt(2 * 1.0 * 0.0005)),  # from rest: 0.032 rad/s reachable within 0.5 mrad
    (0.05, 0.01, 0.0, 0.05),  # reachable: unchanged
    (0.05, 0.0002, 0.03, np.sqrt(0.03 ** 2 + 2 * 1.0 * 0.0002)),  # already moving that way: a head start
    (0.05, 0.0005, -0.04, np.sqrt(2 * 1.0 * 0.0005)),  # moving the other way: no head start
    (-0.05, -0.0005, 0.0, -np.sqrt(2 * 1.0 * 0.0005)),  # negative direction, same cap
    (0.05, -0.001, 0.0, 0.05),  # pointing away from the displacement (the arm ahead of its plan): as it is
    (0.05, 0.0, 0.0, 0.05),  # no displacement: as it is (the joint turns either way)
    (0.0, 0.01, 0.0, 0.0),
])
def test_the_feed_forward_is_capped_at_what_the_joint_reaches(velocity, displacement, start_velocity, expected):
    gate = _gate()  # 5 rad/s^2 x factor 0.2 = 1 rad/s^2 (the factor passed in)
    out = gate._reachable_feed_forward(np.full(7, velocity), np.full(7, displacement), np.full(7, start_velocity),
                                       0.2)
    np.testing.assert_allclose(out, np.full(7, expected), atol=1e-12)


def test_a_streamed_joint_motion_carries_the_factors():
    gate = _gate()
    gate.reset_to(Q_HOME)
    motion, cmd = gate.joint_motion(Q_HOME + 0.01, 0.02, np.full(7, 0.5))
    factor = motion.relative_dynamics_factor
    assert (factor.acceleration, factor.jerk) == pytest.approx(gate.last_dynamics_factors)
    assert factor.acceleration == pytest.approx(0.25)  # the floor: 1.25 x 1 rad/s^2 of 5
    step = cmd.joint_positions_rad - Q_HOME  # 2 mrad (the guard's acceleration limit from rest)
    reach = np.sqrt(2 * 1.25 * np.abs(step))  # 0.071 rad/s within 2 mrad at 1.25 rad/s^2
    np.testing.assert_allclose(np.abs(np.asarray(motion.waypoints[0].target.velocity)), reach, rtol=1e-9)
