"""How franky's planner brakes a streamed joint motion on franky-sim, against the braking envelope's assumptions.

The braking envelope (gpc_ros/control/braking.py) assumes every joint brakes at ``braking_deceleration_rad_s2``
after ``braking_lag_s``. This streams the gate's joint motions (a ramp of joint 1, or of joints 1 and 4) up to a
speed, then holds: from then on every control period brings a motion towards the last target at rest. All motions
replace each other by franky reactions on the robot's clock, every 1 kHz command is logged. Printed per run: the speed
when the hold began, the delay until the commanded speed fell by 2 %, the mean deceleration from 90 % to 10 % of it,
and the distance from the hold to rest against the envelope's ``v lag + v^2 / (2 a)``.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/braking_probe.py [--runs 2]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from gpc_ros.control.command_gate import CommandGate
from gpc_ros.control.envelope import InterventionCounter, SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.joint_guard import JointSpaceGuard
from gpc_ros.control.kinematics import FR3Kinematics
from gpc_ros.sim.franky_sim_process import FrankySimProcess
from gpc_ros.testing.franky_chain import record_chain, set_planner_limits, settled_start

Q_HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
PERIOD_S = 0.02


def run(host: str, axis: np.ndarray, speed: float, acc: float, hold_periods: int = 25) -> dict[str, float]:
    """Ramp along ``axis`` (joint space, unit max-norm) to ``speed`` rad/s at ``acc`` rad/s^2, then hold."""
    import franky

    config = SafetyEnvelopeConfig()
    counter = InterventionCounter()
    gate = CommandGate(SafetyEnvelope(config, counter), JointSpaceGuard(config, FR3Kinematics(), counter), "joint")
    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    try:
        c = config
        set_planner_limits(robot, {"joint_velocity_limit": [c.max_joint_speed_rad_s] * 7,
                                   "joint_acceleration_limit": [c.max_joint_acceleration_rad_s2] * 7,
                                   "joint_jerk_limit": [c.max_joint_jerk_rad_s3] * 7})
        gate.planner_joint_velocity_limit_rad_s = np.asarray(robot.joint_velocity_limit.get(), dtype=np.float64)
        gate.planner_joint_acceleration_limit_rad_s2 = np.asarray(robot.joint_acceleration_limit.get(),
                                                                  dtype=np.float64)
        gate.planner_joint_jerk_limit_rad_s3 = np.asarray(robot.joint_jerk_limit.get(), dtype=np.float64)
        robot.move(franky.JointWaypointMotion([franky.JointWaypoint(Q_HOME)]))
        q0 = settled_start(robot)
        gate.reset_to(q0)
        ramp_s = speed / acc
        moving = int(round((ramp_s + 0.1) / PERIOD_S))
        motions = []
        for k in range(1, moving + 1):
            t = k * PERIOD_S
            s = 0.5 * acc * min(t, ramp_s) ** 2 + speed * max(t - ramp_s, 0.0)
            v = acc * min(t, ramp_s)
            motions.append(gate.joint_motion(q0 + s * axis, PERIOD_S, v * axis)[0])
        hold = gate.last_joints_rad
        for _ in range(hold_periods):
            motions.append(gate.joint_motion(hold, PERIOD_S, np.zeros(7))[0])
        record = record_chain(robot, motions, [PERIOD_S] * (len(motions) - 1), len(motions) * PERIOD_S)
    finally:
        del robot
    t, q, m = record.robot_time_s, record.command, record.motion
    v = np.diff(q, axis=0) / np.diff(t)[:, None]
    speed_along = v @ axis / float(axis @ axis)
    start = int(np.flatnonzero(m[1:] >= moving)[0])  # first velocity sample of the first hold motion
    v_hold = float(speed_along[start])
    after = speed_along[start:]
    slowing = int(np.flatnonzero(after < 0.98 * v_hold)[0])
    i90 = int(np.flatnonzero(after < 0.9 * v_hold)[0])
    i10 = int(np.flatnonzero(after < 0.1 * v_hold)[0])
    rest = int(np.flatnonzero(np.abs(after) < 1e-3)[0])
    decel = 0.8 * v_hold / max(t[start + i10] - t[start + i90], 1e-9)
    distance = float(np.abs(q[start + rest] - q[start]).max())
    model = v_hold * c.braking_lag_s + v_hold ** 2 / (2.0 * c.braking_deceleration_rad_s2)
    return {"v_hold": v_hold, "lag_s": float(t[start + slowing] - t[start]), "decel": decel,
            "distance": distance, "model": model, "acc_factor": gate.last_dynamics_factors[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    c = SafetyEnvelopeConfig()
    print(f"envelope: braking_deceleration_rad_s2={c.braking_deceleration_rad_s2} braking_lag_s={c.braking_lag_s}; "
          f"franky joint acceleration limit {c.max_joint_acceleration_rad_s2} rad/s^2")
    cases = {"joint 1": np.eye(7)[0], "joints 1+4": np.eye(7)[0] + np.eye(7)[3]}
    with FrankySimProcess(pace="fast") as sim:
        for name, axis in cases.items():
            for _ in range(args.runs):
                r = run(sim.host, axis, 0.3, 1.0)
                print(f"{name:>11}: speed at hold {r['v_hold']:.3f} rad/s, falls after {1e3 * r['lag_s']:.0f} ms, "
                      f"deceleration {r['decel']:.2f} rad/s^2 (acceleration factor {r['acc_factor']:.2f}), "
                      f"distance to rest {1e3 * r['distance']:.1f} mrad (envelope's model {1e3 * r['model']:.1f})",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
