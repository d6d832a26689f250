"""Benchmark of the Franka driver against franky-sim: all figures from one run, side by side, as ratios.

1. Limits per unit time at 10, 30 and 100 Hz chunk rates (a 0.2 m/s line, streamed for a few seconds): measured
   peak TCP speed / ``max_speed_m_s``, peak commanded acceleration / ``max_acceleration_m_s2``, and the largest
   velocity step between two consecutive 1 kHz commands (franky's motion callbacks: every command the robot got)
   / its bound ``max_acceleration_m_s2 * 1 ms``, split into the steps at a re-plan (a new motion's first command) and
   elsewhere, and the largest joint velocity step / ``max_joint_acceleration_rad_s2 * 1 ms``; all on the robot's clock.
   Twice: franky-sim paced at real time, and free-running with the executor's clock slowed (``--ahead-clock-rate``),
   so that the robot's clock runs ahead of the executor's (more robot time per control period than planned for).
2. Streaming modes (joint vs cartesian) towards the unreachable in-box corner (0.75, 0.40, 0.05) of issue 9: how far
   the *measured* TCP / elbow / wrist left their boxes, joints past their hardware limits, peak speed / limit.
3. Stops from 0.1, 0.3 and 0.5 m/s (limits raised to 0.6 m/s for this part): time and distance to rest.
4. Chunk accepted -> first motion command (executor clock), and the time to build one command with the joint-space
   check (IK + containment) vs the Cartesian clamp alone, measured in-process side by side.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_driver.py [--duration-s 3] [--latency-trials 20] [--parts 1]``.
franky-sim runs at a load-dependent pace (0.1-4x real time on a shared 2-core machine); figures on the robot's clock.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import numpy as np

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.command_gate import CommandGate
from gpc_ros.control.envelope import SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.executor import ExecutionRefusedError, ExecutorConfig, FrankaExecutor
from gpc_ros.control.gripper import GripperConfig
from gpc_ros.control.joint_guard import JointSpaceGuard, box_excess_m
from gpc_ros.control.kinematics import FR3Kinematics
from gpc_ros.control.motion_metrics import windowed_speed_m_s
from gpc_ros.sim.franky_sim_process import FrankySimProcess

CORNER = np.array([0.75, 0.40, 0.05])


class CommandLog:
    """A real franky.Robot whose motions get a 1 kHz callback recording (robot time, commanded TCP, joints, motion)."""

    def __init__(self, robot, kinematics: FR3Kinematics, context: dict | None = None) -> None:
        object.__setattr__(self, "_robot", robot)
        # context["gate"]: the executor's CommandGate, read at each move for the motion's acceleration factor
        object.__setattr__(self, "context", context if context is not None else {})
        object.__setattr__(self, "full_dynamics", {})
        object.__setattr__(self, "targets", {})
        object.__setattr__(self, "stops", {})  # planned stops (franky's Joint/CartesianStopMotion)
        object.__setattr__(self, "harder", {})  # motions the gate braked harder than its per-motion factors, not full
        object.__setattr__(self, "_kin", FR3Kinematics(kinematics.urdf_path))
        object.__setattr__(self, "rows", [])
        object.__setattr__(self, "lock", threading.Lock())
        object.__setattr__(self, "recording", False)
        object.__setattr__(self, "motions", 0)

    def move(self, motion, *args, **kwargs):
        if self.recording and hasattr(motion, "register_callback"):
            # The callback must not reference this wrapper or the robot: franky keeps it alive with the motion, and a
            # robot kept alive keeps franky-sim's only client slot (the next executor then cannot connect).
            kin, rows, lock = self._kin, self.rows, self.lock
            index = self.motions
            object.__setattr__(self, "motions", index + 1)
            gate = self.context.get("gate")
            if gate is not None:  # franky's full limits (a counted fallback, a planned stop), not the motion's
                self.full_dynamics[index] = "Stop" in type(motion).__name__ or \
                    bool(gate.last_dynamics_factors[0] >= 1.0)
                self.stops[index] = "Stop" in type(motion).__name__
                self.harder[index] = not self.full_dynamics[index] and \
                    getattr(gate, "last_braking", None) in ("braking", "overspeed")
                if gate.streaming_mode == "joint" and gate.last is not None:
                    self.targets[index] = np.array(gate.last.joint_positions_rad, dtype=np.float64)

            def callback(state, dt, rel, abs_time, signal) -> None:
                if hasattr(signal, "q"):
                    q = np.array(signal.q)
                    p = kin.forward(q)[0]
                else:
                    q = np.full(7, np.nan)
                    p = np.array(signal.O_T_EE)[12:15]
                with lock:
                    rows.append((abs_time.to_sec(), p, q, index))
            motion.register_callback(callback)
        return self._robot.move(motion, *args, **kwargs)

    def take(self, arrival_order: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(robot time, commanded TCP, commanded joints (NaN for Cartesian motions), motion index), time-ordered.

        ``arrival_order``: as the callbacks arrived, not sorted. franky's motion time restarts from 0 with every new
        control session (after a stop), so over several sessions sorting would interleave them. A row whose time equals
        the previous one's (a preempting motion's first command) is dropped; one earlier than it starts a new session,
        where no step counts (its interval is negative).
        """
        with self.lock:
            rows = list(self.rows)
            self.rows.clear()
        t = np.array([r[0] for r in rows])
        p = np.array([r[1] for r in rows]).reshape(-1, 3)
        q = np.array([r[2] for r in rows]).reshape(-1, 7)
        m = np.array([r[3] for r in rows], dtype=int)
        if arrival_order:
            keep = np.concatenate([[True], np.diff(t) != 0]) if len(t) else np.zeros(0, bool)
            return t[keep], p[keep], q[keep], m[keep]
        order = np.argsort(t, kind="stable")
        t, p, q, m = t[order], p[order], q[order], m[order]
        keep = np.concatenate([[True], np.diff(t) > 0]) if len(t) else np.zeros(0, bool)
        return t[keep], p[keep], q[keep], m[keep]

    def __getattr__(self, name):
        return getattr(self._robot, name)

    def __setattr__(self, name, value):
        if name in ("recording", "rows", "lock"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._robot, name, value)


def command_stream_ratios(t: np.ndarray, p: np.ndarray, e: SafetyEnvelopeConfig) -> tuple[float, float, float]:
    """(peak commanded speed / limit, peak acceleration over 10 ms / limit, largest 1 ms velocity step / bound)."""
    if len(t) < 30:
        return float("nan"), float("nan"), float("nan")
    dt = np.diff(t)
    v = np.diff(p, axis=0) / dt[:, None]
    one_ms = np.abs(dt - 1e-3) < 2e-4  # consecutive 1 kHz commands
    steps = np.linalg.norm(np.diff(v, axis=0), axis=1)[one_ms[1:] & one_ms[:-1]]
    speed = windowed_speed_m_s(t, p, 0.01)
    vt = (t[1:] + t[:-1]) / 2
    idx = np.searchsorted(vt, vt + 0.01)
    ok = idx < len(vt)
    acc = np.linalg.norm(v[idx[ok]] - v[ok], axis=1) / (vt[idx[ok]] - vt[ok])
    return (float(speed.max()) / e.max_speed_m_s, float(acc.max()) / e.max_acceleration_m_s2,
            float(steps.max()) / (e.max_acceleration_m_s2 * 1e-3))


#: A motion's commanded joints this close (rad, every joint; plus one 1 kHz command's step) to its first waypoint:
#: franky has reached it and plans
#: the second, the brake to rest at its full limits (``CommandGate._motion``).
AT_TARGET_RAD = 1e-4


def step_kinds(t: np.ndarray, p: np.ndarray, q: np.ndarray, motion: np.ndarray,
               full_dynamics: dict[int, bool] | None = None,
               targets: dict[int, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every 1 kHz velocity step and its kind (:func:`replan_split`), one entry per command ``k + 1`` of commands
    ``k``, ``k + 1``, ``k + 2``: ``tcp`` (m/s), ``joint`` (rad/s, the largest joint's), ``ok`` (the three commands 1 ms
    apart), ``at_replan``, ``braking`` (at franky's full limits), ``motion`` (the motion of command ``k + 1``)."""
    dt = np.diff(t)
    one_ms = np.abs(dt - 1e-3) < 2e-4
    ok = one_ms[1:] & one_ms[:-1]  # ok[k]: commands k, k+1, k+2 are 1 ms apart; the step is at command k+1
    tcp = np.linalg.norm(np.diff(np.diff(p, axis=0) / dt[:, None], axis=0), axis=1)
    joint = np.max(np.abs(np.diff(np.diff(q, axis=0) / dt[:, None], axis=0)), axis=1)
    # command j+1 starts a motion when motion[j+1] != motion[j]; the step from the old motion's velocity to the new
    # one's first is tcp[j-1] (commands j-1, j, j+1), the next one tcp[j]: both count as "at a re-plan"
    starts = np.flatnonzero(np.diff(motion) != 0)
    at_replan = np.zeros(len(tcp), bool)
    near = np.concatenate([starts - 1, starts])
    at_replan[near[(near >= 0) & (near < len(tcp))]] = True
    # the kind of each command's motion: at franky's full limits (a fallback, or past its first waypoint)
    full = full_dynamics or {}
    at_full = np.array([full.get(int(m), False) for m in motion], bool)
    for m, target in (targets or {}).items():
        rows = np.flatnonzero(motion == m)
        if len(rows):
            # a joint moving on through its target passes it between two 1 kHz commands: within one command's step
            tick = np.max(np.abs(np.diff(q, axis=0, append=q[-1:])[rows]), axis=1)
            reached = np.flatnonzero(np.max(np.abs(q[rows] - target), axis=1) < AT_TARGET_RAD + tick)
            if len(reached):
                at_full[rows[reached[0]]:rows[-1] + 1] = True
                if rows[-1] + 1 < len(motion):  # the re-plan from the brake into the next motion
                    at_full[rows[-1] + 1] = True
    braking = at_full[1:-1] | at_full[:-2] | at_full[2:]  # any of the step's three commands
    return {"tcp": tcp, "joint": joint, "ok": ok & np.isfinite(joint), "at_replan": at_replan, "braking": braking,
            "motion": motion[1:-1]}


def replan_split(t: np.ndarray, p: np.ndarray, q: np.ndarray, motion: np.ndarray, e: SafetyEnvelopeConfig,
                 full_dynamics: dict[int, bool] | None = None,
                 targets: dict[int, np.ndarray] | None = None) -> dict[str, float]:
    """Where the 1 kHz steps are, as ratios to their bounds (TCP: ``max_acceleration_m_s2`` x 1 ms; joints:
    ``max_joint_acceleration_rad_s2`` x 1 ms).

    Keys: ``at_replans`` / ``elsewhere`` (largest TCP step at a re-plan, i.e. the change from the old motion's last
    commanded velocity to the new motion's first or from that to its second, and elsewhere); ``tracking`` (largest TCP
    step in motions at their per-motion factors, before they reach their first waypoint); ``braking`` (largest TCP
    step at franky's full limits: in motions the gate braked at them, the counted fallbacks in ``full_dynamics``, and
    in motions that reached their first waypoint (commanded joints within ``AT_TARGET_RAD`` of ``targets``) before the
    next replaced them, from there on: the brake to rest; the re-plan into the next motion counts too);
    ``joint`` (largest joint step anywhere); ``braking_motions`` (how many motions had steps of the second kind).
    """
    if len(t) < 30:
        return {k: float("nan") for k in ("at_replans", "elsewhere", "tracking", "braking", "joint",
                                          "braking_motions")}
    s = step_kinds(t, p, q, motion, full_dynamics, targets)
    tcp, ok, braking, at_replan = s["tcp"], s["ok"], s["braking"], s["at_replan"]
    bound, joint_bound = e.max_acceleration_m_s2 * 1e-3, e.max_joint_acceleration_rad_s2 * 1e-3
    return {"at_replans": float(tcp[ok & at_replan].max(initial=0.0)) / bound,
            "elsewhere": float(tcp[ok & ~at_replan].max(initial=0.0)) / bound,
            "tracking": float(tcp[ok & ~braking].max(initial=0.0)) / bound,
            "braking": float(tcp[ok & braking].max(initial=0.0)) / bound,
            "joint": float(s["joint"][ok].max(initial=0.0)) / joint_bound,
            "braking_motions": float(len({int(m) for m in s["motion"][ok & braking]}))}


class ScaledClock:
    """The executor's clock running at ``rate`` x ``time.monotonic`` (rate < 1: the robot's clock runs ahead)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return self.t0 + self.rate * (time.monotonic() - self.t0)

    def sleep_until(self, t: float) -> None:
        """Sleep until this clock reads ``t``."""
        time.sleep(max(0.0, (t - self()) / self.rate))


#: ``--lead-periods``: the executors' ``target_lead_periods`` (None: ExecutorConfig's default).
LEAD_PERIODS: float | None = None


def start_executor(host: str, logs: list, clock: ScaledClock | None = None, **overrides) -> FrankaExecutor:
    logs.clear()  # drop the previous executor's robot: franky-sim takes one client, released when the Robot goes
    gc.collect()
    context: dict = {}

    def factory(h: str):
        import franky

        log = CommandLog(franky.Robot(h, realtime_config=franky.RealtimeConfig.Ignore), FR3Kinematics(), context)
        logs.append(log)
        return log

    overrides.setdefault("gripper", GripperConfig(enabled=False))
    if LEAD_PERIODS is not None:
        overrides.setdefault("target_lead_periods", LEAD_PERIODS)
    executor = FrankaExecutor(ExecutorConfig(robot_host=host, require_enable=False, watchdog_timeout_s=2.0,
                                             **overrides), clock=clock or time.monotonic,
                              robot_factory=factory)
    context["gate"] = executor.gate
    executor.start()
    if not executor.wait_connected(30.0):
        raise SystemExit(f"no connection to franky-sim at {host}")
    time.sleep(0.3)
    return executor


def record(executor: FrankaExecutor) -> tuple[list, callable]:
    snaps: list = []
    executor.add_state_listener(snaps.append)
    return snaps, lambda: executor.remove_state_listener(snaps.append)


def stream_line(executor: FrankaExecutor, rate_hz: float, duration_s: float, direction: float,
                speed_m_s: float = 0.2, clock: ScaledClock | None = None) -> None:
    """Chunks along a line at ``rate_hz`` for ``duration_s`` (both on the executor's clock)."""
    clock = clock or ScaledClock(1.0)
    s = executor.state
    p0, q0 = s.measured_tcp_m.copy(), s.ee_quaternion_xyzw.copy()
    velocity = np.array([0.0, direction * speed_m_s, 0.0])
    t_start = clock()
    k = 0
    while clock() - t_start < duration_s:
        now = clock()
        times = now + 0.05 * np.arange(16)
        try:
            executor.execute(ActionChunk.from_arrays(now, 0.05, positions_m=p0 + np.outer(times - t_start, velocity),
                                                     quaternions_xyzw=np.tile(q0, (16, 1))))
        except (ChunkRejectedError, ExecutionRefusedError):
            pass
        k += 1
        clock.sleep_until(t_start + k / rate_hz)


def measured_extremes(executor: FrankaExecutor, snaps: list) -> dict[str, float]:
    e = executor.config.envelope
    t = np.array([s.robot_time_s for s in snaps])
    keep = np.concatenate([[True], np.diff(t) > 0])
    tcp = np.array([s.measured_tcp_m for s in snaps])[keep]
    q = np.array([s.joint_positions_rad for s in snaps])
    return {
        "tcp_out_mm": 1e3 * max(box_excess_m(s.measured_tcp_m, e.lower_m, e.upper_m) for s in snaps),
        "elbow_wrist_out_mm": 1e3 * max(max(box_excess_m(s.measured_elbow_m, e.arm_lower_m, e.arm_upper_m),
                                            box_excess_m(s.measured_wrist_m, e.arm_lower_m, e.arm_upper_m))
                                        for s in snaps),
        "joint_past_hw_mrad": 1e3 * float(np.max(np.maximum(executor.guard.hard_lower_rad - q, 0)
                                                 + np.maximum(q - executor.guard.hard_upper_rad, 0))),
        "speed_ratio": float(windowed_speed_m_s(t[keep], tcp, 0.05).max(initial=0.0)) / e.max_speed_m_s,
        "closest_to_corner_mm": 1e3 * float(np.linalg.norm(tcp - CORNER, axis=1).min()),
    }


def limits_table(host: str, label: str, rates_hz: list[float], duration_s: float, clock_rate: float = 1.0) -> None:
    """Part 1 on one franky-sim: one row per chunk rate (ratios on the robot's clock).

    ``clock_rate`` < 1 runs the executor's clock slower than wall time, so the robot's clock runs ahead of it.
    """
    logs: list = []
    clock = ScaledClock(clock_rate)
    executor = start_executor(host, logs, clock)
    e = executor.config.envelope
    direction = 1.0
    for rate in rates_hz:
        snaps, detach = record(executor)
        logs[-1].recording = True
        stream_line(executor, rate, duration_s, direction, clock=clock)
        logs[-1].recording = False
        detach()
        executor.stop()
        executor.wait_stopped(30.0)
        executor.enable(True)
        t, p, q, motion = logs[-1].take()
        v_ratio, a_ratio, step_ratio = command_stream_ratios(t, p, e)
        split = replan_split(t, p, q, motion, e, logs[-1].full_dynamics, logs[-1].targets)
        rt = np.array([s.robot_time_s for s in snaps])
        wall = np.array([s.time_s for s in snaps])
        pace = (rt[-1] - rt[0]) / (wall[-1] - wall[0])
        meas = measured_extremes(executor, snaps)["speed_ratio"]
        print(f"{label:>14} {rate:9.0f} {pace:5.2f} {meas:12.2f} {v_ratio:10.2f} {a_ratio:8.2f} {step_ratio:14.2f} "
              f"{split['at_replans']:12.2f} {split['elsewhere']:10.2f} {split['tracking']:9.2f} "
              f"{split['braking']:8.2f} {split['braking_motions']:9.0f} {split['joint']:20.2f}", flush=True)
        direction = -direction
    executor.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--corner-s", type=float, default=15.0)
    parser.add_argument("--latency-trials", type=int, default=20)
    parser.add_argument("--rates-hz", type=float, nargs="+", default=[10, 30, 100])
    parser.add_argument("--sim-paces", nargs="+", choices=["realtime", "fast"], default=["realtime", "fast"],
                        help="franky-sim paces for part 1 (fast: the simulator's clock runs ahead of the executor's)")
    parser.add_argument("--ahead-clock-rate", type=float, default=0.4,
                        help="executor clock / wall time with the fast franky-sim (part 1): below the sim's pace")
    parser.add_argument("--parts", default="1234", help="which parts to run, e.g. 1 or 34")
    parser.add_argument("--lead-periods", type=float, default=None,
                        help="the executors' target_lead_periods (default: ExecutorConfig's)")
    args = parser.parse_args(argv)
    global LEAD_PERIODS
    LEAD_PERIODS = args.lead_periods
    parts = set(args.parts)
    if "1" in parts:
        print("1) limits per unit time (0.2 m/s line; ratios to the configured limits, robot clock); franky-sim paced "
              "at real time, then free-running with the executor's clock at --ahead-clock-rate x wall time (pace = "
              "robot s per executor s: > 1, the robot's clock runs ahead)")
        print(f"{'sim':>14} {'chunk Hz':>9} {'pace':>5} {'meas. speed':>12} {'cmd speed':>10} {'cmd acc':>8} "
              f"{'1 ms dv/bound':>14} {'at re-plans':>12} {'elsewhere':>10} {'tracking':>9} {'braking':>8} "
              f"{'(motions)':>9} {'joint 1 ms dq/bound':>20}")
        for sim_pace in args.sim_paces:
            with FrankySimProcess(pace=sim_pace) as sim:
                if sim_pace == "realtime":
                    limits_table(sim.host, "paced", args.rates_hz, args.duration_s)
                else:
                    limits_table(sim.host, f"fast, exec {args.ahead_clock_rate:g}x", args.rates_hz, args.duration_s,
                                 args.ahead_clock_rate)
    if not parts & set("234"):
        return 0
    with FrankySimProcess(pace="realtime") as sim:
        logs: list = []
        if "2" in parts:
            print("\n2) streaming modes, towards the unreachable in-box corner (0.75, 0.40, 0.05), measured arm")
            print(f"{'mode':>10} {'TCP out mm':>11} {'elbow/wrist out mm':>19} {'joint past hw mrad':>19} "
                  f"{'speed/limit':>12} {'closest to corner mm':>21} {'fault':>6}")
            for mode in ("joint", "cartesian"):
                executor = start_executor(sim.host, logs, streaming_mode=mode)
                snaps, detach = record(executor)
                q0 = executor.state.ee_quaternion_xyzw.copy()
                t_end = time.monotonic() + args.corner_s
                while time.monotonic() < t_end:
                    s = executor.state
                    d = CORNER - s.measured_tcp_m
                    steps = s.measured_tcp_m + np.outer(np.linspace(0.0, 1.0, 10), d * min(1.0, 0.09 / max(
                        np.linalg.norm(d), 1e-9)))
                    try:
                        executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05, positions_m=steps,
                                                                 quaternions_xyzw=np.tile(q0, (10, 1))))
                    except (ChunkRejectedError, ExecutionRefusedError):
                        pass
                    time.sleep(0.05)
                detach()
                m = measured_extremes(executor, snaps)
                print(f"{mode:>10} {m['tcp_out_mm']:11.1f} {m['elbow_wrist_out_mm']:19.1f} "
                      f"{m['joint_past_hw_mrad']:19.1f} {m['speed_ratio']:12.2f} {m['closest_to_corner_mm']:21.0f} "
                      f"{str(executor.state.fault is not None):>6}")
                executor.close()

        if not parts & set("34"):
            return 0
        print("\n3) stops (max_speed_m_s 0.6 for this part): franky's planned stop, robot clock")
        print(f"{'from m/s':>9} {'kind':>8} {'speed at stop':>14} {'time to rest s':>15} {'distance mm':>12}")
        # As test_e_stop_from_speed_comes_to_rest_with_a_planned_stop: the TCP acceleration limits raised (each joint
        # motion's acceleration factor keeps sum_i |J_i| a_i within them: at 4 m/s^2 the 0.5 m/s run-up reached
        # 0.008 m/s, 2026-12-03) and the boxes widened in y (the braking envelope caps the run-up otherwise).
        executor = start_executor(sim.host, logs, envelope=SafetyEnvelopeConfig(
            max_speed_m_s=0.6, max_acceleration_m_s2=20.0, max_rotation_acceleration_rad_s2=60.0,
            max_joint_speed_rad_s=2.5, max_joint_acceleration_rad_s2=10.0,
            workspace_min_m=(0.25, -0.8, 0.05), workspace_max_m=(0.75, 0.8, 0.70),
            arm_points_min_m=(-0.30, -0.9, 0.05), arm_points_max_m=(0.90, 0.9, 1.10)))
        for target in (0.1, 0.3, 0.5):
            q0 = executor.state.ee_quaternion_xyzw.copy()
            home = executor.state.measured_tcp_m.copy()
            home[1] = -0.25
            deadline = time.monotonic() + 60.0
            while np.linalg.norm(executor.state.measured_tcp_m - home) > 0.01 and time.monotonic() < deadline:
                d = home - executor.state.measured_tcp_m
                steps = executor.state.measured_tcp_m + np.outer(np.linspace(0.0, 1.0, 10), d * min(
                    1.0, 0.09 / max(np.linalg.norm(d), 1e-9)))
                executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05, positions_m=steps,
                                                         quaternions_xyzw=np.tile(q0, (10, 1))))
                time.sleep(0.05)
            snaps, detach = record(executor)
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline and executor.state.measured_tcp_m[1] < 0.3:
                p = executor.state.measured_tcp_m
                lead = 0.05 + target * 0.05 * np.arange(10)
                executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05,
                                                         positions_m=p + np.outer(lead, [0.0, 1.0, 0.0]),
                                                         quaternions_xyzw=np.tile(q0, (10, 1))))
                recent = snaps[-400:]
                speed = windowed_speed_m_s(np.array([x.robot_time_s for x in recent]),
                                           np.array([x.measured_tcp_m for x in recent]), 0.05)
                if speed.size and speed[-1] >= 0.9 * target:
                    break
                time.sleep(0.02)
            detach()
            executor.stop()
            report = executor.wait_stopped(60.0)
            executor.enable(True)
            if report is None:
                print(f"{target:9.1f}   (no stop report)")
                continue
            print(f"{target:9.1f} {report.kind:>8} {report.speed_at_stop_m_s:14.3f} {report.time_to_rest_s:15.3f} "
                  f"{1e3 * report.distance_to_rest_m:12.1f}")

        print("\n4) latency")
        latencies = []
        for _ in range(args.latency_trials):
            executor.stop()
            executor.wait_stopped(30.0)
            executor.enable(True)
            executor.first_command_latency_s = None
            s = executor.state
            executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05,
                                                     positions_m=np.tile(s.measured_tcp_m, (4, 1)),
                                                     quaternions_xyzw=np.tile(s.ee_quaternion_xyzw, (4, 1))))
            deadline = time.monotonic() + 5.0
            while executor.first_command_latency_s is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if executor.first_command_latency_s is not None:
                latencies.append(executor.first_command_latency_s)
        executor.close()
        lat = 1e3 * np.array(latencies)
        print(f"chunk accepted -> first motion command (IK check on), {len(lat)} trials: "
              f"median {np.median(lat):.1f} ms, "
              f"p95 {np.percentile(lat, 95):.1f} ms (control period {1e3 / executor.config.control_rate_hz:.0f} ms)")
        # The command build itself, with and without the joint-space check, side by side in this process.
        cfg = SafetyEnvelopeConfig()
        env = SafetyEnvelope(cfg)
        kin = FR3Kinematics()
        gate = CommandGate(env, JointSpaceGuard(cfg, kin, env.counter), "joint")
        q_home = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
        gate.reset_to(q_home)
        p0, quat = kin.forward(q_home)
        previous = gate.last.tcp
        on, off = [], []
        for k in range(300):
            target = p0 + np.array([0.0, 0.1 * np.sin(k / 30.0), 0.0])
            t0 = time.perf_counter()
            env.clamp_cartesian(target, quat, previous, 0.02)
            off.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gate.pose_motion(target, quat, 0.02)
            on.append(time.perf_counter() - t0)
            previous = gate.last.tcp
        on_ms, off_ms = 1e3 * np.median(on), 1e3 * np.median(off)
        print(f"one command: with the joint-space check (IK + containment + motion) {on_ms:.2f} ms median, "
              f"Cartesian clamp alone {off_ms:.3f} ms; ratio {on_ms / off_ms:.0f}x; "
              f"latency without the check would be about {np.median(lat) - on_ms + off_ms:.1f} ms median")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
