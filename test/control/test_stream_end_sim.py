"""A streamed motion that is not replaced in time comes to rest smoothly instead of stopping dead at its target.

The executor sends every control period a franky waypoint motion towards the next checked target, with the plan's
velocity as the target velocity. franky's planner is time-optimal: it often reaches the target before the next
motion replaces it (on franky-sim, whenever the robot's clock runs faster than the executor's, e.g. the ``fast``
pace on an idle machine). With the target velocity as its last state, franky then holds the target: the 1 kHz
command stopped dead (a velocity step of the full speed within 1 ms: 50 x the bound here for joints, 75 x for the
TCP), and franky started the next motion from that stop's reported acceleration (up to 118 rad/s^2 or 71 m/s^2):
the arm swung back for tens of ms (expert tracking 13 mm median instead of 0.3 mm, issue 9). Each motion now ends
with a second waypoint at the same target at rest. All on the robot's clock (franky reactions replace the motions).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.control.command_gate import CommandGate
from gpc_ros.control.envelope import InterventionCounter, SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.joint_guard import JointSpaceGuard
from gpc_ros.control.kinematics import FR3Kinematics
from gpc_ros.testing.franky_chain import record_chain, set_planner_limits, settled_start, velocity_steps

Q_HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
PERIOD_S = 0.02  # the executor's default control period
#: Allowed 1 kHz velocity step / (max acceleration x 1 ms), as in test/sim/test_commanded_state.py (libfranka's
#: 100 Hz command low-pass; franky's Cartesian limits are per axis). A dead stop at the target: 50 x (joint), 75 x.
STEP_MULTIPLE = {"joint": 3.0, "cartesian": 4.0}
STREAMED = 20  # motions replaced every PERIOD_S, then the last one runs on alone
ALONE_S = 0.3


def _gate(mode: str) -> CommandGate:
    config = SafetyEnvelopeConfig()
    counter = InterventionCounter()
    gate = CommandGate(SafetyEnvelope(config, counter), JointSpaceGuard(config, FR3Kinematics(), counter), mode)
    gate.reset_to(Q_HOME)
    return gate


def _plan(t: float, speed: float, acc: float) -> tuple[float, float]:
    """Distance and velocity of a ramp to ``speed`` at ``acc``, then on at ``speed``."""
    t_ramp = speed / acc
    if t < t_ramp:
        return 0.5 * acc * t * t, acc * t
    return 0.5 * acc * t_ramp * t_ramp + speed * (t - t_ramp), speed


def _streamed_motions(gate: CommandGate, mode: str, count: int = STREAMED) -> list:
    """The gate's motions for a plan moving joint 1 (joint) or the TCP along y (cartesian), one per period."""
    motions = []
    q0 = gate.last_joints_rad  # the seed
    p0, quat = gate.guard.kinematics.forward(q0)
    for k in range(1, count + 2):
        s, v = _plan(k * PERIOD_S, 0.25 if mode == "joint" else 0.15, 2.5 if mode == "joint" else 1.0)
        if mode == "joint":
            axis = np.eye(7)[0]
            motion, _ = gate.joint_motion(q0 + s * axis, PERIOD_S, v * axis)
        else:
            axis = np.array([0.0, 1.0, 0.0])
            motion, _ = gate.pose_motion(p0 + s * axis, quat, PERIOD_S, v * axis)
        motions.append(motion)
    return motions


def test_a_streamed_motion_ends_at_rest_at_its_target():
    for mode in ("joint", "cartesian"):
        motions = _streamed_motions(_gate(mode), mode)
        last = motions[-1].waypoints
        assert len(last) == 2, (mode, len(last))
        first, rest = last[0].target, last[1].target
        if mode == "joint":
            assert np.any(np.asarray(first.velocity) != 0.0)
            np.testing.assert_array_equal(np.asarray(rest.position), np.asarray(first.position))
            assert not np.any(np.asarray(rest.velocity))
        else:
            assert np.any(np.asarray(first.velocity.end_effector_twist.linear) != 0.0)
            np.testing.assert_array_equal(np.asarray(rest.pose.end_effector_pose.translation),
                                          np.asarray(first.pose.end_effector_pose.translation))
            assert not np.any(np.asarray(rest.velocity.end_effector_twist.linear))


def _run(host: str, mode: str, late: int | None = None, late_s: float = 0.0,
         count: int = STREAMED) -> tuple[np.ndarray, np.ndarray]:
    """Stream the gate's motions (replaced by reactions every PERIOD_S of robot time; motion ``late`` after
    ``late_s``); (robot time, command) of every 1 kHz command."""
    import franky

    gate = _gate(mode)
    c = gate.envelope.config
    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    try:
        set_planner_limits(robot, {"joint_velocity_limit": [c.max_joint_speed_rad_s] * 7,
                                   "joint_acceleration_limit": [c.max_joint_acceleration_rad_s2] * 7,
                                   "joint_jerk_limit": [c.max_joint_jerk_rad_s3] * 7,
                                   "translation_velocity_limit": c.max_speed_m_s,
                                   "translation_acceleration_limit": c.max_acceleration_m_s2,
                                   "translation_jerk_limit": c.max_jerk_m_s3})
        gate.planner_joint_velocity_limit_rad_s = np.asarray(robot.joint_velocity_limit.get(), dtype=np.float64)
        robot.move(franky.JointWaypointMotion([franky.JointWaypoint(Q_HOME)]))
        # franky starts the stream from the measured joints (franky-sim's arm sags a few mrad off Q_HOME): seed the
        # gate there, as the executor does after a connect or a stop (seeded at Q_HOME, the first motions corrected
        # the sag and, time-synchronised, held joint 1 back).
        gate.reset_to(settled_start(robot))
        motions = _streamed_motions(gate, mode, count)
        after = [late_s if k == late else PERIOD_S for k in range(len(motions) - 1)]
        until = count * PERIOD_S + ALONE_S + (late_s if late is not None else 0.0)
        record = record_chain(robot, motions, after, until)
    finally:
        del robot
    return record.robot_time_s, record.command


@pytest.mark.parametrize("mode", ["joint", "cartesian"])
def test_a_motion_not_replaced_in_time_does_not_stop_dead(franky_sim_fast, mode):
    t, c = _run(franky_sim_fast.host, mode)
    assert t[-1] - t[0] >= STREAMED * PERIOD_S + ALONE_S - 0.01, "the stream did not run to its end"
    v = np.diff(c, axis=0) / np.diff(t)[:, None]
    steps = velocity_steps(t, c, "max" if mode == "joint" else "l2")
    c_env = SafetyEnvelopeConfig()
    steps = steps / ((c_env.max_joint_acceleration_rad_s2 if mode == "joint" else c_env.max_acceleration_m_s2) * 1e-3)
    assert np.count_nonzero(steps) > 300, f"too few consecutive 1 kHz commands ({np.count_nonzero(steps)})"
    worst = int(np.argmax(steps))
    assert steps.max() <= STEP_MULTIPLE[mode], (
        f"{mode}: largest 1 kHz velocity step {steps.max():.2f} x the bound (allowed {STEP_MULTIPLE[mode]}) at robot "
        f"time {t[worst + 1] - t[0]:.3f} s of {t[-1] - t[0]:.3f} s")
    speed = np.max(np.abs(v[-20:]))  # at rest at the end
    assert speed < 1e-3, speed


def test_a_late_replan_after_the_target_was_reached_keeps_the_tcp_speed():
    """The executor's re-plan came 10 ms after the motion had reached its target (the robot's clock ahead of the
    executor's), in a stream of motions replaced every 20 ms. Before the fix, in 6 of 18 probe runs (the late
    re-plan 20-40 ms after that motion's start), some motion restarted from a dead stop's reported
    ``ddq_d`` of -96.5 rad/s^2 and drove joint 1 *backwards* at 0.78 rad/s: the commanded TCP at 0.376 m/s,
    1.50 x ``max_speed_m_s`` (most likely the idle CI failure of test_joint_chunks_are_kept_in_the_workspace: 1.60 x,
    measured; not reproduced in that test on this shared machine).
    After it: at most 0.21 m/s in 8 runs with re-plans 20-50 ms after the start."""
    from gpc_ros.sim.franky_sim_process import FrankySimProcess

    with FrankySimProcess(pace="fast") as sim:
        t, q = _run(sim.host, "joint", late=20, late_s=0.03, count=30)
    kinematics = FR3Kinematics()
    tcp = np.array([kinematics.forward(x)[0] for x in q])
    dt = np.diff(t)
    speed = np.linalg.norm(np.diff(tcp, axis=0), axis=1) / dt
    one_ms = np.abs(dt - 1e-3) < 2e-4
    assert np.count_nonzero(one_ms) > 300, f"too few consecutive 1 kHz commands ({np.count_nonzero(one_ms)})"
    limit = SafetyEnvelopeConfig().max_speed_m_s
    assert speed[one_ms].max() <= 1.1 * limit, (speed[one_ms].max(), limit)
