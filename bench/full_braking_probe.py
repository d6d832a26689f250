"""Why does the gate brake harder? Each ``harder_braking`` firing with its context (issue 9).

Until session 18 these brakes ran at franky's full limits and were counted as ``full_dynamics_braking`` (both
counters are read, so the probe runs on older trees too). Each row also says where the start is: ``band_mm`` (its
largest excess over the boxes shrunk by ``braking_margin_m``), ``tgt_band_mm`` (the same for the target), ``wall_mm``
(the TCP's distance to the nearest workspace wall) and ``s_real_box`` (the start's brakeable scale against the boxes
themselves). The 1 kHz steps at franky's full limits are split by source: motions at factor 1, planned stops, motions
past their first waypoint.

Runs the 200 adversarial streams of test_driver_safety_sim (same kinds, same seed handling, franky-sim at its fast
pace, as bench/adversarial_streams_record.py) and wraps the executor's ``CommandGate._motion``. For every motion it
keeps the start (the robot's ``q_d``, ``dq_d``), the target, the speed factor and the planned feed-forward; when the
counter rises it prints one row:

- ``s``: the start velocity's brakeable scale (``speeds=False``, what the gate tests against ``FULL_BRAKING_SCALE``);
- ``why``: what fails at scale 1: ``joint<i>`` (stops past the halt margin), ``tcp`` / ``elbow`` / ``wrist`` (the
  point's excess over its shrunk box grows along the braking path), ``sync`` (only the time-synchronised path);
- ``need``: the deceleration (rad/s^2, every joint, lag as configured) at which the start velocity *is* brakeable,
  by bisection over [braking_deceleration_rad_s2, 5 x that] (``>5x`` when none is);
- the previous motion: wall time since it was sent, its start's brakeable scale and speed factor, and the scale of
  *its* start velocity from *this* start (did the arm carry an unbrakeable velocity forward, or was it accelerated
  into one?);
- ``|v|`` the largest joint speed, ``tcp`` the TCP speed (m/s) at the start, the stream kind.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/full_braking_probe.py SEED [N_STREAMS [KINDS]]``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "control"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_driver_safety_sim as streams  # noqa: E402
from bench_driver import CommandLog, step_kinds  # noqa: E402

from gpc_ros.control.braking import BrakingEnvelope  # noqa: E402
from gpc_ros.control.envelope import SafetyEnvelopeConfig  # noqa: E402
from gpc_ros.control.executor import ExecutorConfig, FrankaExecutor  # noqa: E402
from gpc_ros.control.gripper import GripperConfig  # noqa: E402
from gpc_ros.control.kinematics import FR3Kinematics  # noqa: E402
from gpc_ros.sim.franky_sim_process import FrankySimProcess  # noqa: E402
from gpc_ros.testing.executor import Recorder  # noqa: E402


def why_not_brakeable(braking: BrakingEnvelope, start: np.ndarray, v: np.ndarray) -> str:
    c = braking.config
    end = start + braking.stopping_displacement_rad(v)
    synced_end = start + v * (c.braking_lag_s + 0.5 * float(np.abs(v).max()) / c.braking_deceleration_rad_s2)
    bad = []
    for e in (end, synced_end):
        for i in np.flatnonzero(((e < braking.joint_lower_rad) & (v < 0)) | ((e > braking.joint_upper_rad) & (v > 0))):
            bad.append(f"joint{i + 1}")
    base = braking._excess(start)
    for q in braking.braking_path(start, v)[0]:
        ex = braking._excess(q)
        bad += [k for k in ex if ex[k] > base[k] + 1e-4]
    if not bad:
        for q in braking.braking_path(start, v, synchronized=True)[0]:
            ex = braking._excess(q)
            if any(ex[k] > base[k] + 1e-4 for k in ex):
                bad.append("sync")
    return ",".join(sorted(set(bad))) or "-"


def needed_deceleration(braking: BrakingEnvelope, start: np.ndarray, v: np.ndarray) -> float:
    a0 = braking.config.braking_deceleration_rad_s2
    lo, hi = a0, 5.0 * a0
    probe = BrakingEnvelope(dataclasses.replace(braking.config, braking_deceleration_rad_s2=hi), braking.kinematics,
                            braking.joint_lower_rad - braking.config.joint_halt_margin_rad,
                            braking.joint_upper_rad + braking.config.joint_halt_margin_rad)
    if not probe.brakeable(start, v, speeds=False):
        return float("inf")
    for _ in range(8):
        mid = 0.5 * (lo + hi)
        probe = BrakingEnvelope(dataclasses.replace(braking.config, braking_deceleration_rad_s2=mid),
                                braking.kinematics, braking.joint_lower_rad - braking.config.joint_halt_margin_rad,
                                braking.joint_upper_rad + braking.config.joint_halt_margin_rad)
        if probe.brakeable(start, v, speeds=False):
            hi = mid
        else:
            lo = mid
    return hi


def start_logged(host: str) -> tuple[FrankaExecutor, Recorder, list]:
    """``test_driver_safety_sim.start`` with franky's 1 kHz commands recorded (bench_driver's ``CommandLog``)."""
    logs: list = []
    context: dict = {}

    def factory(h: str):
        import franky

        log = CommandLog(franky.Robot(h, realtime_config=franky.RealtimeConfig.Ignore), FR3Kinematics(), context)
        logs.append(log)
        return log

    envelope = SafetyEnvelopeConfig()
    if os.environ.get("PROBE_LAG_S"):  # e.g. 0.04: the braking envelope's lag (braking_lag_s)
        envelope = SafetyEnvelopeConfig(braking_lag_s=float(os.environ["PROBE_LAG_S"]))
    print("braking_lag_s", envelope.braking_lag_s, flush=True)
    executor = FrankaExecutor(ExecutorConfig(robot_host=host, watchdog_timeout_s=2.0, envelope=envelope,
                                             gripper=GripperConfig(enabled=False)), robot_factory=factory)
    context["gate"] = executor.gate
    executor.start()
    assert executor.wait_connected(30.0), f"no connection to franky-sim at {host}"
    recorder = Recorder()
    executor.add_state_listener(recorder)
    streams.wait_for(lambda: executor.state.connected and np.all(np.isfinite(executor.state.measured_tcp_m)), 10.0,
                     "a first state reading")
    executor.enable(True)
    return executor, recorder, logs


def main() -> int:
    seed = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    only = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    worst: dict[str, float] = {}
    steps = {"tracking": [], "harder": [], "full": [], "full: stop motions": [], "full: factor 1 motions": [],
             "full: past the first waypoint": [], "joint": []}
    with FrankySimProcess(pace="fast") as sim:
        executor, recorder, logs = start_logged(sim.host)
        gate = executor.gate
        braking = gate.braking
        kin = gate.guard.kinematics
        original = gate._motion
        current = {"kind": None}

        robot_time = {"t": float("nan")}
        limits_period = executor._limits_period_s

        def period(snap):
            robot_time["t"] = snap.robot_time_s
            return limits_period(snap)

        executor._limits_period_s = period
        records: list[dict] = []

        def motion(cmd, scale, robot_joints_rad=None, robot_joint_velocities_rad_s=None, arrival_s=None):
            before = gate.guard.counter["full_dynamics_braking"] + gate.guard.counter["harder_braking"]
            out = original(cmd, scale, robot_joints_rad, robot_joint_velocities_rad_s, arrival_s)
            fired = gate.guard.counter["full_dynamics_braking"] + gate.guard.counter["harder_braking"] > before
            records.append({"t": time.monotonic(), "rt": robot_time["t"], "kind": current["kind"],
                            "start": None if robot_joints_rad is None else np.array(robot_joints_rad, dtype=float),
                            "v": None if robot_joint_velocities_rad_s is None else
                            np.array(robot_joint_velocities_rad_s, dtype=float),
                            "factor": gate.last_speed_factor, "target": cmd.joint_positions_rad.copy(),
                            "fired": fired,
                            "braking": (("full" if gate.last_dynamics_factors[0] >= 1.0 else "harder") if fired
                                        else None),
                            "f_acc": gate.last_dynamics_factors[0], "sent_before": executor._commands_sent})
            return out

        gate._motion = motion
        e = executor.config.envelope
        bound, joint_bound = e.max_acceleration_m_s2 * 1e-3, e.max_joint_acceleration_rad_s2 * 1e-3
        with executor:
            ready = executor.state.joint_positions_rad.copy()
            logs[-1].recording = True
            for i in range(n):
                kind = streams.STREAM_KINDS[i % len(streams.STREAM_KINDS)] if i < len(streams.STREAM_KINDS) else \
                    str(rng.choice(streams.STREAM_KINDS))
                if only is not None:
                    kind = only[i % len(only)]
                current["kind"] = kind
                n0 = len(recorder)
                streams.adversarial_stream(executor, rng, kind, 0.4)
                rep = streams.measured_report(executor, recorder.since(n0))
                worst.update({k: max(worst.get(k, 0.0), v) for k, v in rep.items()})
                log = logs[-1]
                t, p, q, m = log.take(arrival_order=True)
                if len(t) > 30:
                    here = set(np.unique(m).tolist())
                    full, targets = ({j: d[j] for j in here if j in d} for d in (
                        dict(log.full_dynamics), dict(log.targets)))
                    harder = dict(getattr(log, "harder", {}))  # the tried variant's CommandLog (docstring)
                    k = step_kinds(t, p, q, m, full, targets)
                    hard = np.array([harder.get(int(j), False) for j in m], bool)
                    k["harder"] = (hard[1:-1] | hard[:-2] | hard[2:]) & ~k["braking"]
                    ok = k["ok"]
                    tracking = ok & ~k["braking"] & ~k["harder"]
                    steps["tracking"].append(k["tcp"][tracking].max(initial=0.0) / bound)
                    steps["harder"].append(k["tcp"][ok & k["harder"]].max(initial=0.0) / bound)
                    steps["full"].append(k["tcp"][ok & k["braking"]].max(initial=0.0) / bound)
                    # the full-limit steps by source: planned stops, motions at factor 1 (fallbacks / spurious
                    # starts), motions that reached their first waypoint (braking to rest at MAX_DYNAMICS)
                    stops = {j: bool(log.stops.get(j, False)) for j in full}
                    ones = {j: bool(full[j]) and not stops[j] for j in full}
                    for name, (fd, tg) in {"full: stop motions": (stops, None), "full: factor 1 motions": (ones, None),
                                           "full: past the first waypoint": ({}, targets)}.items():
                        kk = step_kinds(t, p, q, m, fd, tg)
                        steps[name].append(kk["tcp"][kk["ok"] & kk["braking"]].max(initial=0.0) / bound)
                    steps["joint"].append(k["joint"][ok].max(initial=0.0) / joint_bound)
                if executor.state.fault is not None:
                    print("fault", executor.state.fault, flush=True)
                streams.between_streams(executor, i, ready, ignore=(Exception,))
            executor.stop()
            executor.wait_stopped(10.0)
            logs[-1].recording = False
    limit = gate.planner_joint_velocity_limit_rad_s * e.relative_dynamics_factor
    for k, rec in enumerate(records):
        if not rec["fired"] or rec["start"] is None or rec["v"] is None:
            continue
        start, v = rec["start"], rec["v"]
        row = {"kind": rec["kind"], "braking": rec["braking"], "f_acc": rec["f_acc"],
               "s": braking.brakeable_scale(start, v, speeds=False),
               "why": why_not_brakeable(braking, start, v), "need": needed_deceleration(braking, start, v),
               "vmax": float(np.abs(v).max()), "tcp": float(np.linalg.norm(kin.jacobian(start)[:3] @ v))}
        # Where the start is: each check point's excess over its *shrunk* box (mm; > 0: inside the braking margin
        # band next to a wall) and over the real box; the same for the motion's target.
        base = braking._excess(start)
        row["band_mm"] = round(1e3 * max(base.values()), 2)
        row["tgt_band_mm"] = round(1e3 * max(braking._excess(rec["target"]).values()), 2)
        lo, hi = e.lower_m, e.upper_m
        tcp_pos = kin.check_points(start)["tcp"]
        row["wall_mm"] = round(1e3 * float(min((tcp_pos - lo).min(), (hi - tcp_pos).min())), 2)
        wide = BrakingEnvelope(dataclasses.replace(braking.config, braking_margin_m=0.0), kin,
                               braking.joint_lower_rad - braking.config.joint_halt_margin_rad,
                               braking.joint_upper_rad + braking.config.joint_halt_margin_rad)
        row["s_real_box"] = wide.brakeable_scale(start, v, speeds=False)
        nxt = records[k + 1] if k + 1 < len(records) else None
        if nxt is not None:  # whether the executor sent this motion (the hold / deferral may not)
            row["sent"] = nxt["sent_before"] > rec["sent_before"]
            row["v_next"] = float(np.abs(nxt["v"]).max()) if nxt["v"] is not None else float("nan")
        prev = records[k - 1] if k > 0 else None
        if prev is not None and prev["start"] is not None and prev["v"] is not None:
            row["dt_ms"] = 1e3 * (rec["t"] - prev["t"])
            row["rdt_ms"] = 1e3 * (rec["rt"] - prev["rt"])
            row["prev_s"] = braking.brakeable_scale(prev["start"], prev["v"], speeds=False)
            row["prev_factor"] = prev["factor"]
            row["prev_fired"] = prev["fired"]
            d = prev["target"] - prev["start"]
            if float(np.abs(d).max()) > 1e-9:
                fastest = d * float(np.min(limit / np.maximum(np.abs(d), 1e-12))) * prev["factor"]
                row["v_vs_fastest"] = float(np.abs(v).max()) / max(float(np.abs(fastest).max()), 1e-9)
        rows.append(row)
        print("FIRE", {k2: (round(x, 3) if isinstance(x, float) else x) for k2, x in row.items()}, flush=True)
    gaps = np.diff([r["rt"] for r in records]) * 1e3
    gaps = gaps[np.isfinite(gaps) & (gaps > 0) & (gaps < 200)]
    print("robot-time gap between motions (ms) quantiles 50/90/99/max:",
          np.percentile(gaps, [50, 90, 99, 100]).round(1), "of", len(gaps))
    print(f"{len(records)} motions; {len(rows)} braking fallbacks over {n} streams "
          f"(harder: {sum(r['braking'] == 'harder' for r in rows)}, full: {sum(r['braking'] == 'full' for r in rows)})")
    print("measured, worst over the streams:", {k: round(v, 4) for k, v in worst.items()})
    for name, values in steps.items():
        x = np.array(values)
        print(f"1 kHz {name} step / bound per stream: max {x.max(initial=0.0):.2f}, "
              f"p90 {np.percentile(x, 90) if len(x) else float('nan'):.2f}, streams > 1.0: {int(np.sum(x > 1.0))} "
              f"of {len(x)}")
    if rows:
        s = np.array([r["s"] for r in rows])
        need = np.array([r["need"] for r in rows])
        print("s quartiles", np.percentile(s, [0, 25, 50, 75, 100]).round(3))
        print("need (rad/s^2) quartiles", np.percentile(need[np.isfinite(need)], [0, 25, 50, 75, 100]).round(2)
              if np.any(np.isfinite(need)) else "-", "inf:", int(np.sum(~np.isfinite(need))))
        from collections import Counter
        print("why", Counter(r["why"] for r in rows))
        print("kind", Counter(r["kind"] for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
