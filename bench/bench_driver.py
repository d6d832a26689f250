"""Benchmark of the Franka driver core against a paced franky-sim FR3 (all figures from one run, side by side).

1. Smoothness vs chunk rate: chunks along a 0.1 m/s line at 10..200 Hz; the lowest mid-path speed over 0.1 s
   windows as a fraction of nominal (>= 0.5 = no stop-and-go) and the fraction of chunks the executor accepted.
2. Tracking error vs the commanded path at 10 and 30 Hz chunk rates: distance between the measured TCP position
   and the plan at the same instant (includes the lag of the arm behind the plan), and the cross-track part.
3. Time from accepting a chunk to sending its first motion command (bounded by one control period).

Run: ``.venv/bin/python bench/bench_driver.py [--duration-s 2.5] [--latency-trials 20]``.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from gpc_ros.control.chunk import ActionChunk
from gpc_ros.control.executor import ExecutionRefused, ExecutorConfig, FrankaExecutor
from gpc_ros.control.gripper import GripperConfig
from gpc_ros.control.motion_metrics import windowed_speed_m_s
from gpc_ros.sim.franky_sim_process import FrankySimProcess

NOMINAL_M_S = 0.1


def stream(executor: FrankaExecutor, rate_hz: float, duration_s: float, direction: float):
    """Stream a line along y; returns (t, measured positions, plan positions, accepted fraction)."""
    snaps = []
    lock = threading.Lock()

    def record(snap):
        with lock:
            snaps.append((snap.time_s, snap.ee_position_m))

    executor.add_state_listener(record)
    s = executor.state
    p0, q0 = s.ee_position_m.copy(), s.ee_quaternion_xyzw.copy()
    velocity = np.array([0.0, direction * NOMINAL_M_S, 0.0])
    t_start = time.monotonic()
    sent = accepted = 0
    while time.monotonic() - t_start < duration_s:
        now = time.monotonic()
        times = now + 0.05 * np.arange(16)
        chunk = ActionChunk.from_arrays(now, 0.05, positions_m=p0 + np.outer(times - t_start, velocity),
                                        quaternions_xyzw=np.tile(q0, (16, 1)))
        sent += 1
        try:
            accepted += executor.execute(chunk) is not None
        except ExecutionRefused:
            pass
        time.sleep(max(0.0, t_start + sent / rate_hz - time.monotonic()))
    executor.stop()
    executor._state_listeners.remove(record)  # noqa: SLF001 (bench-only detach)
    executor.enable(True)
    with lock:
        t = np.array([a for a, _ in snaps]) - t_start
        p = np.array([b for _, b in snaps])
    plan = p0 + np.outer(t, velocity)
    return t, p, plan, accepted / max(sent, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=2.5)
    parser.add_argument("--latency-trials", type=int, default=20)
    parser.add_argument("--rates-hz", type=float, nargs="+", default=[10, 30, 60, 100, 200])
    args = parser.parse_args(argv)
    with FrankySimProcess(pace="realtime") as sim:
        config = ExecutorConfig(robot_host=sim.host, gripper=GripperConfig(enabled=False), require_enable=False)
        with FrankaExecutor(config) as executor:
            if not executor.wait_connected(20.0):
                raise SystemExit(f"no connection to franky-sim at {sim.host}")
            time.sleep(0.2)
            print(f"control_rate_hz={config.control_rate_hz} state_rate_hz={config.state_rate_hz} "
                  f"nominal speed {NOMINAL_M_S} m/s, paced franky-sim\n")
            print("1) smoothness vs chunk rate")
            print(f"{'chunk Hz':>9} {'min speed/nominal':>18} {'mean speed/nominal':>19} {'accepted':>9}")
            tracking = {}
            direction = 1.0
            for rate in args.rates_hz:
                t, p, plan, accepted = stream(executor, rate, args.duration_s, direction)
                mid = (t > 0.7) & (t < args.duration_s - 0.3)
                speed = windowed_speed_m_s(t[mid], p[mid])
                print(f"{rate:9.0f} {speed.min() / NOMINAL_M_S:18.2f} {speed.mean() / NOMINAL_M_S:19.2f} "
                      f"{accepted:9.2f}")
                err = np.linalg.norm(p[mid] - plan[mid], axis=1)
                cross = np.linalg.norm((p[mid] - plan[mid])[:, [0, 2]], axis=1)
                tracking[rate] = (err, cross)
                direction = -direction  # go back and forth so the arm stays in the workspace
                time.sleep(0.3)
            print("\n2) tracking error vs commanded path (measured TCP vs plan at the same instant)")
            print(f"{'chunk Hz':>9} {'mean mm':>8} {'max mm':>7} {'cross-track max mm':>19} {'lag ms':>7}")
            for rate in (10.0, 30.0):
                if rate in tracking:
                    err, cross = tracking[rate]
                    print(f"{rate:9.0f} {1e3 * err.mean():8.1f} {1e3 * err.max():7.1f} {1e3 * cross.max():19.2f} "
                          f"{1e3 * err.mean() / NOMINAL_M_S:7.0f}")
            print("\n3) chunk accepted -> first motion command")
            latencies = []
            s = executor.state
            for _ in range(args.latency_trials):
                executor.stop()
                executor.enable(True)
                executor.first_command_latency_s = None
                now = time.monotonic()
                p = executor.state.ee_position_m
                executor.execute(ActionChunk.from_arrays(now, 0.05, positions_m=np.tile(p, (4, 1)),
                                                         quaternions_xyzw=np.tile(s.ee_quaternion_xyzw, (4, 1))))
                deadline = time.monotonic() + 2.0
                while executor.first_command_latency_s is None and time.monotonic() < deadline:
                    time.sleep(0.001)
                if executor.first_command_latency_s is not None:
                    latencies.append(executor.first_command_latency_s)
            lat = 1e3 * np.array(latencies)
            print(f"trials {len(lat)}: median {np.median(lat):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
                  f"max {lat.max():.1f} ms (control period {1e3 / config.control_rate_hz:.0f} ms)")
            print(f"\ninterventions: {executor.interventions.snapshot()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
