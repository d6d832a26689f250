"""Where the largest 1 kHz velocity steps of part 1 of ``bench_driver.py`` come from (issue 9).

Streams the bench's 0.2 m/s line at ``RATE`` chunks/s, ``N`` times, against one real-time franky-sim, records every
1 kHz command franky sent (as ``bench_driver.CommandLog``) and, per motion the gate built, its dynamics factors
(velocity, acceleration, jerk), the duration the joints arrive in (None: time-optimal), the counters that fired, and
the robot time of its first command. Per run it prints the pace, the largest TCP step / ``max_acceleration_m_s2 x
1 ms`` and the largest joint step / ``max_joint_acceleration_rad_s2 x 1 ms``, and for the three largest TCP steps: the
motion, how long after that motion's first command, whether past its planned arrival (the brake-to-rest waypoint,
franky's full limits) and the motion's factors.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/step_outlier_probe.py [RATE [N]]`` (defaults 100 Hz, 10 runs); with a
CPU hog beside to see the outliers.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_driver as bd  # noqa: E402

from gpc_ros.sim.franky_sim_process import FrankySimProcess  # noqa: E402


def instrument(executor, log, motions: list) -> None:
    """Record, per motion sent to franky (``log.move``), the gate's factors, arrival duration, the counters that fired
    since the previous one, and the wall time."""
    gate = executor.gate
    move = type(log).move.__get__(log)
    last = {"counts": gate.guard.counter.snapshot()}

    def wrapped(motion, *args, **kwargs):
        counts = gate.guard.counter.snapshot()
        fired = sorted(k for k in counts if counts[k] != last["counts"].get(k, 0))
        last["counts"] = counts
        if log.recording:
            motions.append({"kind": type(motion).__name__, "speed": gate.last_speed_factor,
                            "dyn": tuple(gate.last_dynamics_factors), "arrival": gate.last_arrival_s,
                            "fired": fired, "wall": time.monotonic()})
        return move(motion, *args, **kwargs)
    object.__setattr__(log, "move", wrapped)


def steps(t, p, q, e):
    dt = np.diff(t)
    one_ms = np.abs(dt - 1e-3) < 2e-4
    ok = one_ms[1:] & one_ms[:-1]
    tcp = np.linalg.norm(np.diff(np.diff(p, axis=0) / dt[:, None], axis=0), axis=1)
    joint = np.abs(np.diff(np.diff(q, axis=0) / dt[:, None], axis=0))
    tcp[~ok] = 0.0
    joint[~ok] = 0.0
    return tcp / (e.max_acceleration_m_s2 * 1e-3), joint / (e.max_joint_acceleration_rad_s2 * 1e-3)


def main() -> int:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if os.environ.get("PROBE_LEAD"):
        bd.LEAD_PERIODS = float(os.environ["PROBE_LEAD"])
    with FrankySimProcess(pace="realtime") as sim:
        logs: list = []
        executor = bd.start_executor(sim.host, logs)
        e = executor.config.envelope
        direction = 1.0
        for run in range(n):
            motions: list = []
            instrument(executor, logs[-1], motions)
            snaps, detach = bd.record(executor)
            logs[-1].recording = True
            object.__setattr__(logs[-1], "motions", 0)
            logs[-1].full_dynamics.clear()
            logs[-1].targets.clear()
            bd.stream_line(executor, rate, 3.0, direction)
            logs[-1].recording = False
            detach()
            executor.stop()
            executor.wait_stopped(30.0)
            executor.enable(True)
            direction = -direction
            t, p, q, m = logs[-1].take()
            if len(t) < 30:
                print(f"run {run}: too few commands ({len(t)})")
                continue
            rt = np.array([s.robot_time_s for s in snaps])
            wall = np.array([s.time_s for s in snaps])
            pace = (rt[-1] - rt[0]) / (wall[-1] - wall[0])
            tcp, joint = steps(t, p, q, e)
            # each step k is at command k+1
            first_cmd = {}
            for k, mi in enumerate(m):
                first_cmd.setdefault(int(mi), t[k])
            jmax = joint.max(axis=1)
            worst_joint = int(joint.max(axis=0).argmax()) + 1
            kinds = bd.step_kinds(t, p, q, m, logs[-1].full_dynamics, logs[-1].targets)
            tracking = kinds["ok"] & ~kinds["braking"]
            braking = kinds["ok"] & kinds["braking"]
            print(f"run {run}: pace {pace:.2f}, motions sent {len(motions)} (with commands {len(first_cmd)}), "
                  f"TCP step max {tcp.max():.2f}, joint step max {jmax.max():.2f} (joint {worst_joint}); "
                  f"tracking: TCP {tcp[tracking].max(initial=0):.2f}, joint {jmax[tracking].max(initial=0):.2f}; "
                  f"at franky's full limits: TCP {tcp[braking].max(initial=0):.2f}, joint "
                  f"{jmax[braking].max(initial=0):.2f}", flush=True)
            if os.environ.get("PROBE_TRACKING"):  # rank only the steps classified as tracking
                tcp = np.where(tracking, tcp, 0.0)
                jmax = np.where(tracking, jmax, 0.0)
            fired_total: dict = {}
            for mo in motions:
                for f in mo["fired"]:
                    fired_total[f] = fired_total.get(f, 0) + 1
            full = sum(1 for mo in motions if mo["dyn"][0] >= 1.0)
            timed = sum(1 for mo in motions if mo["arrival"] is not None)
            print(f"   counters fired: {fired_total}; motions at full dynamics: {full}; with an arrival duration: "
                  f"{timed} of {len(motions)}")
            rank = jmax if os.environ.get("PROBE_BY_JOINT") else tcp
            for k in np.argsort(rank)[::-1][:3]:
                if rank[k] < (0.6 if os.environ.get("PROBE_BY_JOINT") else 1.0) and k != np.argmax(rank):
                    break
                mi = int(m[k + 1])
                since = 1e3 * (t[k + 1] - first_cmd[mi])
                mo = motions[mi] if mi < len(motions) else None
                new_motion = k + 2 < len(m) and (m[k + 1] != m[k] or m[k + 2] != m[k + 1])
                arrival = None if mo is None else mo["arrival"]
                past = arrival is not None and since > 1e3 * arrival
                factors = None if mo is None else tuple(round(x, 3) for x in (mo["speed"],) + mo["dyn"])
                lasted = 1e3 * (first_cmd.get(mi + 1, t[-1]) - first_cmd[mi])
                gap = "-" if mo is None or mi + 1 >= len(motions) else \
                    f"{1e3 * (motions[mi + 1]['wall'] - mo['wall']):.0f} ms"
                arr = "None" if arrival is None else f"{1e3 * arrival:.0f} ms"
                kind = None if mo is None else mo["kind"]
                target = logs[-1].targets.get(mi)
                rows = np.flatnonzero(m == mi)
                closest = None if target is None else float(np.max(np.abs(q[rows] - target), axis=1).min())
                kind = f"{kind}, closest to its target {closest}, full {logs[-1].full_dynamics.get(mi)}"
                print(f"   step {tcp[k]:.2f} (joint {jmax[k]:.2f}) at motion {mi} ({kind}), {since:.0f} ms after its "
                      f"first command{' (re-plan)' if new_motion else ''}; arrival {arr}{' PAST IT' if past else ''}; "
                      f"factors {factors}; fired {None if mo is None else mo['fired']}; motion lasted {lasted:.0f} ms "
                      f"(robot); wall gap to the next move {gap}")
        executor.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
