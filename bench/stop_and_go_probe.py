"""The stop-and-go scenario of ``test_streamed_chunks_move_without_stop_and_go``, repeated, the dip shown (issue 9).

Streams a 0.1 m/s line at ``RATE`` chunks/s for 2.5 s, ``N`` times against one real-time franky-sim (the direction
alternates, so the arm stays in its box), and prints per run the pace, the lowest windowed speed over the test's
floor (among windows whose commands were on time), the interventions that fired, and for runs under 1.15 × the floor
the snapshots around the dip (robot time, commands sent, measured / commanded y, franky's commanded joint velocities).

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/stop_and_go_probe.py [RATE [N]]`` (defaults 10 Hz, 20 runs); run it
with a CPU hog beside to see the dips (docs/driver.md, session 14: 2 of 20 runs under the floor).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "control"))
import test_executor_sim as scenario  # noqa: E402  (the test's helpers)

from gpc_ros.control.motion_metrics import windowed_speed_m_s  # noqa: E402
from gpc_ros.control.timing import TimingConfig  # noqa: E402
from gpc_ros.sim.franky_sim_process import FrankySimProcess  # noqa: E402


def main() -> int:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with FrankySimProcess() as sim:
        for it in range(n):
            executor, recorder = scenario.start_executor(sim.host, timing=TimingConfig(blend_mode="crossfade"))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
