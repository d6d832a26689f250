"""Where franky's 1 kHz velocity steps at a re-plan come from: a minimal, deterministic reproduction on franky-sim.

One ``JointWaypointMotion`` (or ``CartesianWaypointMotion``) is replaced by a second one, and that by a third, through
franky reactions on the motion's *robot* clock (``Measure.REL_TIME``), so every run re-plans at the same robot times;
a reaction initialises the new motion exactly as a preempting ``robot.move`` does (``Motion::init(robot_state,
previous_command)``). Every 1 kHz command franky computes is logged with the robot state franky got at that tick.

For each re-plan it prints, per mode: the velocity step between the last command of the old motion and the first of
the new one / its bound (``max acceleration x 1 ms``), and the reported starting velocity franky's planner takes
(``dq_d`` / ``O_dP_EE_c``) against the commanded velocity just before. Only what the simulator reports decides the
step: the position comes from franky's own previous command.

Run: ``PYTHONPATH=$PWD nice -n 15 .venv/bin/python bench/replan_step_probe.py [--mode joint|cartesian]``.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from gpc_ros.sim.franky_sim_process import FrankySimProcess
from gpc_ros.testing.franky_chain import set_planner_limits

JOINT_ACC = 5.0  # rad/s^2, the envelope's max_joint_acceleration_rad_s2
CART_ACC = 2.0  # m/s^2, the envelope's max_acceleration_m_s2
Q_HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])


def run(host: str, mode: str, replan_s: tuple[float, ...], cutoff_hz: float | None) -> list[dict]:
    """Run the chain of motions once; return one row per 1 kHz command (robot time order)."""
    import franky

    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    try:
        robot.recover_from_errors()
        set_planner_limits(robot, {"joint_velocity_limit": [1.0] * 7, "joint_acceleration_limit": [JOINT_ACC] * 7,
                                   "joint_jerk_limit": [5000.0] * 7, "translation_velocity_limit": 0.25,
                                   "translation_acceleration_limit": CART_ACC, "translation_jerk_limit": 2000.0})
        move_kwargs = {} if cutoff_hz is None else {"cutoff_frequency": cutoff_hz}
        robot.move(franky.JointWaypointMotion([franky.JointWaypoint(Q_HOME)]), **move_kwargs)  # start at rest
        rows: list[dict] = []
        lock = threading.Lock()

        def log(motion_index: int):
            def callback(state, dt, rel, abs_time, signal) -> None:
                row = {"motion": motion_index, "t": abs_time.to_sec(), "dt": dt.to_sec(),
                       "q_d": np.array(state.q_d), "dq_d": np.array(state.dq_d), "ddq_d": np.array(state.ddq_d)}
                if hasattr(signal, "q"):
                    row["cmd"] = np.array(signal.q)
                else:
                    row["cmd"] = np.array(signal.O_T_EE)[12:15]
                    row["dP_c"] = np.array(state.O_dP_EE_c.linear)
                    row["ddP_c"] = np.array(state.O_ddP_EE_c.linear)
                with lock:
                    rows.append(row)
            return callback

        # Back and forth targets, so that every re-plan reverses or redirects a moving arm.
        if mode == "joint":
            offsets = [np.array([0.4, 0.3, 0.0, 0.3, 0.0, -0.3, 0.3]),
                       np.array([-0.4, -0.1, 0.0, -0.2, 0.0, 0.2, -0.3])]

            def make(k: int):
                return franky.JointWaypointMotion([franky.JointWaypoint(Q_HOME + offsets[k % 2])],
                                                  return_when_finished=False)
            reaction_type = franky.JointPositionReaction
        else:
            state0 = robot.current_cartesian_state.pose.end_effector_pose
            p0, quat0 = np.array(state0.translation), np.array(state0.quaternion)
            offsets = [np.array([0.0, 0.15, 0.05]), np.array([0.05, -0.15, -0.05])]

            def make(k: int):
                pose = franky.RobotPose(franky.Affine(p0 + offsets[k % 2], quat0))
                return franky.CartesianWaypointMotion([franky.CartesianWaypoint(pose)], return_when_finished=False)
            reaction_type = franky.CartesianPoseReaction
        motions = [make(k) for k in range(len(replan_s) + 1)]
        for k, m in enumerate(motions):
            m.register_callback(log(k))
        for k, delay in enumerate(replan_s):
            motions[k].add_reaction(reaction_type(franky.Measure.REL_TIME >= delay, motions[k + 1]))
        robot.move(motions[0], asynchronous=True, **move_kwargs)
        deadline = time.monotonic() + 60.0
        total = sum(replan_s) + 0.15
        while time.monotonic() < deadline:
            with lock:
                done = rows and rows[-1]["motion"] == len(motions) - 1 and \
                    rows[-1]["t"] - next(r["t"] for r in rows if r["motion"] == len(motions) - 1) > 0.15
            if done or (rows and rows[-1]["t"] - rows[0]["t"] > total + 1.0):
                break
            time.sleep(0.01)
        robot.stop()  # libfranka's stop: the running move ends as "preempted"
        try:
            robot.join_motion(5.0)
        except franky.ControlException:
            pass
        with lock:
            out = sorted(rows, key=lambda r: r["t"])
        return out
    finally:
        del robot


def analyse(rows: list[dict], mode: str) -> list[dict]:
    """One dict per re-plan: step / bound, and what the planner started from vs the command stream."""
    bound = (JOINT_ACC if mode == "joint" else CART_ACC) * 1e-3
    t = np.array([r["t"] for r in rows])
    c = np.array([r["cmd"] for r in rows])
    motion = np.array([r["motion"] for r in rows])
    v = np.diff(c, axis=0) / np.diff(t)[:, None]  # v[k] = velocity from command k to k+1
    steps = np.abs(np.diff(v, axis=0))  # steps[k] = change between v[k] and v[k+1], at command k+1
    step_norms = steps.max(axis=1) if mode == "joint" else np.linalg.norm(np.diff(v, axis=0), axis=1)
    starts = np.flatnonzero(np.diff(motion) != 0) + 1
    near_replans = np.unique(np.clip(np.concatenate([starts - 2, starts - 1, starts]), 0, len(step_norms) - 1))
    out = []
    for k in np.flatnonzero(np.diff(motion) != 0) + 1:  # k = first command of a new motion
        if k < 3 or k + 1 >= len(rows):
            continue
        r = rows[k]
        v_before, v_after = v[k - 2], v[k - 1]  # command k-2 -> k-1, and k-1 -> k (the new motion's first)
        reported = r["dq_d"] if mode == "joint" else r["dP_c"]
        reported_acc = r["ddq_d"] if mode == "joint" else r["ddP_c"]
        norm = (lambda x: np.max(np.abs(x))) if mode == "joint" else np.linalg.norm
        qd_fd = (rows[k]["q_d"] - rows[k - 1]["q_d"]) / (t[k] - t[k - 1])
        out.append({
            "t": r["t"], "dt_ms": 1e3 * r["dt"],
            "step": norm(v_after - v_before) / bound,
            "rep_vs_before": norm(reported - v_before) / bound,
            "after_vs_rep": norm(v_after - reported) / bound,
            "rep_acc": norm(reported_acc) / (bound * 1e3),
            "fd_vs_before": float(np.max(np.abs(qd_fd - v_before[:7]))) / (JOINT_ACC * 1e-3)
            if mode == "joint" else float("nan"),
            "elsewhere": float(np.max(np.delete(step_norms, near_replans))) / bound,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["joint", "cartesian"], default="joint")
    parser.add_argument("--pace", choices=["fast", "realtime"], default="fast")
    parser.add_argument("--replan-s", type=float, nargs="+", default=[0.06, 0.02, 0.1, 0.04],
                        help="robot time each motion runs before the next replaces it")
    parser.add_argument("--cutoff-hz", type=float, default=None,
                        help="libfranka's command low-pass cutoff (franky's default: 100; 1000 = off)")
    parser.add_argument("--dump", default="", help="write every logged row to this .npz")
    args = parser.parse_args(argv)
    with FrankySimProcess(pace=args.pace) as sim:
        rows = run(sim.host, args.mode, tuple(args.replan_s), args.cutoff_hz)
    if args.dump:
        np.savez(args.dump, **{key: np.array([r[key] for r in rows]) for key in rows[0]})
    late = sum(1 for r in rows if r["dt"] > 1.5e-3)
    print(f"mode={args.mode} pace={args.pace} cutoff={args.cutoff_hz or 'default (100 Hz)'}: {len(rows)} commands, "
          f"{late} after a gap > 1 ms")
    for rep in analyse(rows, args.mode):
        print("  re-plan at t={t:.3f} s (dt {dt_ms:.0f} ms): step/bound {step:6.2f}; "
              "|reported v - v_before|/bound {rep_vs_before:6.2f}; |v_after - reported v|/bound {after_vs_rep:5.2f}; "
              "|reported acc|/limit {rep_acc:5.2f}; |FD of reported q_d - v_before|/bound {fd_vs_before:5.2f}; "
              "largest step away from re-plans/bound {elsewhere:5.2f}".format(**rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
