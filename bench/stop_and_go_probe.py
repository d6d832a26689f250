"""The stop-and-go scenario of ``test_streamed_chunks_move_without_stop_and_go``, repeated, the dip shown (issue 9).

Streams a 0.1 m/s line at ``RATE`` chunks/s for 2.5 s, ``N`` times against one real-time franky-sim (the direction
alternates, so the arm stays in its box), and prints per run the pace, the lowest windowed speed over the test's
floor (among windows whose commands were on time), the interventions that fired, and for runs under 1.15 × the floor
the snapshots around the dip (robot time, commands sent, measured / commanded y, franky's commanded joint velocities)
and the motions the gate built there: the duration the joints arrive in (None: the time-optimal fallback, and why),
the start velocity and displacement it was computed from, the feed-forward, and the robot's state (``q_d``, ``dq_d``,
``ddq_d``) read again when the motion was built. Runs under the floor are pickled to ``/tmp``.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/stop_and_go_probe.py [RATE [N]]`` (defaults 10 Hz, 20 runs); run it
with a CPU hog beside to see the dips (docs/driver.md, *The windows' top edge*). Environment: ``PROBE_LEAD=K`` sets
``target_lead_periods``; ``PROBE_FRESH_START=1`` builds each motion from the robot's state read when it is built
rather than the loop's snapshot; ``PROBE_TICKS=1`` also records franky's 1 kHz commands (slows franky-sim down).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "control"))
import test_executor_sim as scenario  # noqa: E402  (the test's helpers)

from gpc_ros.control.motion_metrics import windowed_speed_m_s  # noqa: E402
from gpc_ros.control.timing import TimingConfig  # noqa: E402
from gpc_ros.sim.franky_sim_process import FrankySimProcess  # noqa: E402


def instrument(gate, log: list, ticks: list | None = None, robot=None) -> None:
    """Record, per motion the gate builds: wall time, the duration it chose (None: the time-optimal fallback), why it
    fell back (``turning`` / ``not brakeable``), start velocity, displacement and feed-forward (joint streaming)."""
    motion, reachable, consistent = gate._motion, gate._reachable_feed_forward, gate._consistent_feed_forward
    state = {}

    def reachable_wrapped(*args, **kwargs):
        state["fallback"] = "turning" if state.get("in_consistent") else "not brakeable"
        return reachable(*args, **kwargs)

    def consistent_wrapped(*args, **kwargs):
        state["in_consistent"] = True
        try:
            return consistent(*args, **kwargs)
        finally:
            state["in_consistent"] = False

    def motion_wrapped(cmd, feed_forward_scale, robot_joints_rad=None, robot_joint_velocities_rad_s=None,
                       arrival_s=None):
        state["fallback"] = None
        if os.environ.get("PROBE_FRESH_START") and robot is not None and robot() is not None:
            st = robot().state  # the robot's commanded state now, not at the loop's snapshot
            robot_joints_rad, robot_joint_velocities_rad_s = np.array(st.q_d), np.array(st.dq_d)
        out = motion(cmd, feed_forward_scale, robot_joints_rad, robot_joint_velocities_rad_s, arrival_s)
        d = None if robot_joints_rad is None else cmd.joint_positions_rad - robot_joints_rad
        index = len(log)
        live = None if robot is None else robot()
        if live is not None:
            st = live.state
            fresh = (st.time.to_sec(), np.array(st.q_d), np.array(st.dq_d), np.array(st.ddq_d))
        else:
            fresh = None
        if ticks is not None:
            def callback(st, dt, rel, abs_time, signal, index=index):
                ticks.append((index, rel.to_sec(), abs_time.to_sec(), np.array(signal.q), np.array(st.q_d),
                              np.array(st.dq_d), np.array(st.ddq_d)))
            out.register_callback(callback)
        log.append((time.monotonic(), gate.last_arrival_s, state["fallback"],
                    None if robot_joint_velocities_rad_s is None else np.array(robot_joint_velocities_rad_s),
                    d, np.array(gate.last_target_velocity_rad_s), gate.last_dynamics_factors,
                    gate.last_speed_factor, np.array(cmd.joint_positions_rad), fresh, arrival_s))
        return out

    gate._motion = motion_wrapped
    gate._reachable_feed_forward = reachable_wrapped
    gate._consistent_feed_forward = consistent_wrapped


def main() -> int:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    lead_override = {"target_lead_periods": float(os.environ["PROBE_LEAD"])} if os.environ.get("PROBE_LEAD") else {}
    with FrankySimProcess() as sim:
        for it in range(n):
            executor, recorder = scenario.start_executor(sim.host, timing=TimingConfig(blend_mode="crossfade"),
                                                          **lead_override)
            log: list = []
            ticks: list = [] if os.environ.get("PROBE_TICKS") else None
            instrument(executor.gate, log, ticks, lambda: executor._robot)
            with executor:
                s = executor.state
                before = executor.interventions.snapshot()
                t_start, t_end = scenario.stream_line(executor, s.ee_position_m, s.ee_quaternion_xyzw,
                                                      np.array([0.0, 0.1 * (-1) ** it, 0.0]), 2.5, rate)
                t, p, pace = recorder.robot_track(t_start + 0.7, t_end - 0.3)
                nominal = min(0.1 / pace, executor.config.envelope.max_speed_m_s)
                speed, ends = windowed_speed_m_s(t, p, return_end_times=True)
                floor = 0.5 * np.minimum(np.maximum.accumulate(speed), nominal)
                on_time = scenario.commands_on_time(recorder, t_start + 0.5, t_end - 0.3, ends, 0.1,
                                                    2.5 * executor.config.control_period_s)
                ratio = np.where(on_time, speed / np.maximum(floor, 1e-9), np.inf)
                w = int(np.argmin(ratio))
                after = executor.interventions.snapshot()
                fired = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
                print(f"run {it}: pace {pace:.2f}, lowest speed / floor {ratio[w]:.2f} ({speed[w]:.3f} m/s) at "
                      f"{ends[w] - ends[0]:.2f} s, on time {on_time.sum()}/{len(on_time)}, fired {fired}", flush=True)
                if ratio[w] < 1.15:
                    for x in recorder.since(0):
                        if t_start + 0.5 <= x.time_s <= t_end - 0.3 and ends[w] - 0.2 < x.robot_time_s < ends[w] + 0.05:
                            print(f"    robot t {x.robot_time_s - ends[0]:.3f} sent {x.commands_sent} "
                                  f"y {x.measured_tcp_m[1]:.4f} commanded y {x.ee_position_m[1]:.4f} "
                                  f"dq_d {np.round(x.commanded_joint_velocities_rad_s, 3)}")
                    t_lo = next(x.time_s for x in recorder.since(0) if x.robot_time_s >= ends[w] - 0.2)
                    t_hi = next((x.time_s for x in recorder.since(0) if x.robot_time_s >= ends[w] + 0.05), np.inf)
                    for (tm, dur, why, v0, d, ff, fac, speed_factor, _q, fresh, _arr) in log:
                        if t_lo <= tm <= t_hi:
                            print(f"    motion at {tm - t_lo:.4f} s: duration {dur} fallback {why} factors "
                                  f"{np.round(fac, 2)} speed factor {speed_factor:.3f}\n      v0 {np.round(v0, 3)}\n"
                                  f"      d  {np.round(d, 4)}\n      ff {np.round(ff, 3)}\n"
                                  f"      fresh t {fresh[0]:.4f} dq_d {np.round(fresh[2], 3)} "
                                  f"ddq_d {np.round(fresh[3], 2)}")
                if ratio[w] < 1.0:
                    import pickle

                    out = f"/tmp/stop_and_go_dip_{os.getpid()}_{it}.pkl"
                    with open(out, "wb") as f:
                        pickle.dump({"log": log, "ticks": list(ticks or []), "dip_robot_t": float(ends[w]),
                                     "snaps": [(x.time_s, x.robot_time_s, x.commanded_joint_velocities_rad_s)
                                               for x in recorder.since(0)]}, f)
                    print(f"    saved {out}")
                fallbacks = sum(1 for e in log if e[2] is not None)
                print(f"    motions {len(log)}, time-optimal fallbacks {fallbacks} "
                      f"({sorted(set(e[2] for e in log if e[2]))})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
