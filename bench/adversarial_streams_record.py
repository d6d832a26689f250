"""The 200 adversarial streams of test_measured_state_stays_inside_over_adversarial_streams, recorded (issue 9).

Runs the test's streams (``test/control/test_driver_safety_sim.py``: same kinds, same seed handling) against a
free-running franky-sim, but does not stop at a failure. Per stream it keeps the test's measures plus the *commanded*
TCP's excess (FK of franky's 1 kHz ``q_d``, which tells the planner's overshoot from franky-sim's tracking) and speed
(``cmd_speed_ratio``), the pace, and how often ``harder_braking`` / ``scaled_turning_feed_forward`` fired.
Streams whose measured TCP / elbow / wrist left their box by more than 5 mm, or whose measured speed exceeded 1.05 x
or commanded speed 1.03 x, are pickled with this stream's and the previous stream's snapshots and every motion's
target and feed-forward (the executor's robot ``move`` is wrapped to record them; that wrapper keeps the robot object
alive, so run one executor per process).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/adversarial_streams_record.py SEED OUT_PREFIX [N_STREAMS [KINDS]]`` ->
``OUT_PREFIX.json`` (one row per stream) and ``OUT_PREFIX.streamN.pkl``; ``KINDS`` (comma-separated, e.g.
``stamps,corner``) runs only those kinds, in turn. Figures: docs/driver.md (sessions 13, 14).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "control"))
import test_driver_safety_sim as streams  # noqa: E402  (the test's streams and measures)

from gpc_ros.control.joint_guard import box_excess_m  # noqa: E402
from gpc_ros.control.motion_metrics import windowed_speed_m_s  # noqa: E402
from gpc_ros.sim.franky_sim_process import FrankySimProcess  # noqa: E402


def commanded_speed_ratio(snaps, limit_m_s: float) -> float:
    """The test's speed measure (50 ms windows, robot clock) on the *commanded* TCP (franky's O_T_EE of ``q_d``)."""
    t = np.array([s.robot_time_s for s in snaps])
    keep = np.concatenate([[True], np.diff(t) > 0])
    if keep.sum() <= 10:
        return 0.0
    speed = windowed_speed_m_s(t[keep], np.array([s.ee_position_m for s in snaps])[keep], 0.05)
    return float(speed.max()) / limit_m_s if speed.size else 0.0


def main() -> int:
    seed, out = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    only = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else None  # e.g. "stamps,corner": only these kinds
    rng = np.random.default_rng(seed)
    rows = []
    with FrankySimProcess(pace="fast") as sim:
        executor, recorder = streams.start(sim.host, watchdog_timeout_s=2.0)
        sent = []
        move_robot = executor._robot.move

        def move(motion, asynchronous=True):
            sent.append((time.monotonic(), executor.gate.last.joint_positions_rad.copy(),
                         executor.gate.last_target_velocity_rad_s.copy(), executor.gate.last_arrival_s,
                         executor.gate.last_speed_factor))
            return move_robot(motion, asynchronous=asynchronous)

        executor._robot.move = move
        e = executor.config.envelope
        t_all = time.monotonic()
        n0 = s0 = 0
        with executor:
            ready = executor.state.joint_positions_rad.copy()
            for i in range(n):
                kind = streams.STREAM_KINDS[i % len(streams.STREAM_KINDS)] if i < len(streams.STREAM_KINDS) else \
                    str(rng.choice(streams.STREAM_KINDS))
                if only is not None:
                    kind = only[i % len(only)]
                n_prev, s_prev = n0, s0
                n0, s0 = len(recorder), len(sent)
                before = executor.interventions.snapshot()
                streams.adversarial_stream(executor, rng, kind, 0.4)
                snaps = recorder.since(n0)
                rep = streams.measured_report(executor, snaps)
                rep["cmd_tcp_out_m"] = max(box_excess_m(s.ee_position_m, e.lower_m, e.upper_m) for s in snaps)
                rep["cmd_speed_ratio"] = commanded_speed_ratio(snaps, e.max_speed_m_s)
                rep["kind"], rep["stream"] = kind, i
                rep["pace"] = (snaps[-1].robot_time_s - snaps[0].robot_time_s) / max(
                    snaps[-1].time_s - snaps[0].time_s, 1e-9)
                rep["fault"] = executor.state.fault
                after = executor.interventions.snapshot()
                for name in ("harder_braking", "scaled_turning_feed_forward", "harder_braking_overspeed"):
                    rep[name] = after.get(name, 0) - before.get(name, 0)
                rows.append(rep)
                if rep["speed_ratio"] > 1.05 or rep["cmd_speed_ratio"] > 1.03 or \
                        max(rep["tcp_out_m"], rep["elbow_out_m"], rep["wrist_out_m"]) > 0.005:
                    with open(f"{out}.stream{i}.pkl", "wb") as f:
                        pickle.dump({"rep": rep, "snaps": recorder.since(n_prev), "sent": sent[s_prev:],
                                     "interventions": after}, f)
                    print("OUT", json.dumps(rep), flush=True)
                streams.between_streams(executor, i, ready, ignore=(Exception,))  # as the test
            executor.stop()
            executor.wait_stopped(10.0)
        print(f"total {time.monotonic() - t_all:.1f} s", flush=True)
    with open(out + ".json", "w") as f:
        json.dump(rows, f)
    worst = max(rows, key=lambda r: r["tcp_out_m"])
    print("worst measured TCP outside:", worst, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
