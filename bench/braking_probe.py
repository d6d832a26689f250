"""How franky's planner brakes a streamed joint motion on franky-sim, against the braking envelope's assumptions.

The braking envelope (gpc_ros/control/braking.py) assumes every joint brakes at ``braking_deceleration_rad_s2``
after ``braking_lag_s``. This streams the gate's joint motions (a ramp of joint 1, or of joints 1 and 4) up to a
speed, then holds: from then on every control period brings a motion towards the last target at rest. All motions
replace each other by franky reactions on the robot's clock, every 1 kHz command is logged. Printed per run: when the
leading joint starts to slow down after the hold, how long braking takes, and per moving joint its speed then, its
distance to rest and mean deceleration, against braking.py's model (every joint braking on its own at
``braking_deceleration_rad_s2``).

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


def run(host: str, axis: np.ndarray, speed: float, acc: float, hold_periods: int = 40) -> dict[str, float]:
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
    start = int(np.flatnonzero(m[1:] >= moving)[0])  # first velocity sample of the first hold motion
    lead = int(np.argmax(np.abs(axis)))
    after = np.abs(v[start:, lead])
    onset = start + int(np.flatnonzero(after < 0.98 * after[0])[0])  # the leading joint starts to slow down
    moving_joints = np.flatnonzero(np.abs(axis) > 0)
    rest = onset + int(np.flatnonzero(np.abs(v[onset:, moving_joints]).max(axis=1) < 1e-3)[0])
    v_on = v[onset - 1]
    a = getattr(gate, "last_dynamics_factors", (1.0, 1.0))[0] * c.max_joint_acceleration_rad_s2
    duration = float(t[rest] - t[onset])
    out = {"lag_s": float(t[onset] - t[start]), "duration_s": duration, "planner_a": a,
           "model_duration_s": float(np.abs(v_on).max()) / c.braking_deceleration_rad_s2}
    for j in moving_joints:
        out[f"v{j + 1}"] = float(v_on[j])
        out[f"d{j + 1}"] = float(abs(q[rest, j] - q[onset, j]))
        out[f"model{j + 1}"] = v_on[j] ** 2 / (2.0 * c.braking_deceleration_rad_s2)  # on its own, as braking.py
        out[f"decel{j + 1}"] = float(abs(v_on[j])) / max(duration, 1e-9)
    return out


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
                joints = "; ".join(
                    f"joint {j[1:]} at {r[j]:.3f} rad/s: {1e3 * r['d' + j[1:]]:.1f} mrad to rest (on its own at "
                    f"braking_deceleration: {1e3 * r['model' + j[1:]]:.1f}), mean {r['decel' + j[1:]]:.2f} rad/s^2"
                    for j in r if j.startswith("v"))
                print(f"{name:>11}: slows {1e3 * r['lag_s']:.0f} ms after the hold, at rest after "
                      f"{1e3 * r['duration_s']:.0f} ms (planner {r['planner_a']:.2f} rad/s^2); {joints}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
