"""The *measured* arm stays inside the envelope (issue 9), against a real franky-sim FR3 through the public
FrankaExecutor API: every case of the issue's *Why* as a regression test, e-stops from 0.1/0.3/0.5 m/s, the gripper
released on close, and a property test over random adversarial streams checking the measured state.

The measured TCP, elbow and wrist are FK of the *measured* joints (franky-sim's O_T_EE is computed from the
commanded ones). Speeds are measured on the robot's own clock (franky-sim runs at a load-dependent pace) over
50 ms windows. Tolerances (stated once, here) cover franky-sim's loose PD tracking, not the envelope's logic:
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.envelope import SafetyEnvelopeConfig
from gpc_ros.control.executor import ExecutionRefusedError, ExecutorConfig, FrankaExecutor, RobotSnapshot
from gpc_ros.control.gripper import GripperConfig
from gpc_ros.control.joint_guard import box_excess_m
from gpc_ros.control.motion_metrics import windowed_speed_m_s
from gpc_ros.testing.executor import Recorder
from gpc_ros.testing.spin import wait_until

pytestmark = pytest.mark.timeout(600)

#: How far the measured TCP / elbow / wrist may be outside their boxes (m): franky-sim's tracking overshoot.
BOX_TOLERANCE_M = 0.015
#: Measured TCP and joint speeds (50 ms windows, robot clock) may exceed the configured limits by this factor
#: (franky-sim's tracking). Measured over 200 streams (docs/driver.md): at most 1.020 x with the braking envelope and
#: deferred re-plans (5 runs, load 5-8); 1.14-1.22 x without them; 1.72-2.03 x without the per-motion speed factor.
SPEED_TOLERANCE = 1.1
#: Joint limits: the *hardware* limits, no tolerance (the command margin is 0.1 rad).
READY_Q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785])


wait_for = functools.partial(wait_until, period_s=0.01)


def start(host: str, **overrides) -> tuple[FrankaExecutor, Recorder]:
    overrides.setdefault("gripper", GripperConfig(enabled=False))
    executor = FrankaExecutor(ExecutorConfig(robot_host=host, **overrides)).start()
    assert executor.wait_connected(30.0), f"no connection to franky-sim at {host}"
    recorder = Recorder()
    executor.add_state_listener(recorder)
    wait_for(lambda: executor.state.connected and np.all(np.isfinite(executor.state.measured_tcp_m)), 10.0,
             "a first state reading")
    executor.enable(True)
    return executor, recorder


def measured_report(executor: FrankaExecutor, snaps: list[RobotSnapshot]) -> dict[str, float]:
    """Worst measured violations over ``snaps``: box excess (m), joints past the hardware limits (rad), peak
    speeds / limits (robot clock, 50 ms windows)."""
    e = executor.config.envelope
    guard = executor.guard
    tcp = np.array([s.measured_tcp_m for s in snaps])
    q = np.array([s.joint_positions_rad for s in snaps])
    t = np.array([s.robot_time_s for s in snaps])
    keep = np.concatenate([[True], np.diff(t) > 0])  # one sample per robot-clock instant
    tcp, q, t = tcp[keep], q[keep], t[keep]
    out = {
        "tcp_out_m": max(box_excess_m(s.measured_tcp_m, e.lower_m, e.upper_m) for s in snaps),
        "elbow_out_m": max(box_excess_m(s.measured_elbow_m, e.arm_lower_m, e.arm_upper_m) for s in snaps),
        "wrist_out_m": max(box_excess_m(s.measured_wrist_m, e.arm_lower_m, e.arm_upper_m) for s in snaps),
        "joint_past_hw_rad": float(np.max(np.maximum(guard.hard_lower_rad - q, 0.0)
                                          + np.maximum(q - guard.hard_upper_rad, 0.0))),
        "speed_ratio": 0.0, "joint_speed_ratio": 0.0,
    }
    if len(t) > 10:
        speed = windowed_speed_m_s(t, tcp, 0.05)
        if speed.size:
            out["speed_ratio"] = float(speed.max()) / e.max_speed_m_s
        joint_speed = np.array([windowed_speed_m_s(t, q[:, [i]], 0.05).max(initial=0.0) for i in range(7)])
        out["joint_speed_ratio"] = float(joint_speed.max()) / e.max_joint_speed_rad_s
    return out


def assert_inside(report: dict[str, float], context: str = "") -> None:
    assert report["tcp_out_m"] <= BOX_TOLERANCE_M, (context, report)
    assert report["elbow_out_m"] <= BOX_TOLERANCE_M and report["wrist_out_m"] <= BOX_TOLERANCE_M, (context, report)
    assert report["joint_past_hw_rad"] == 0.0, (context, report)
    assert report["speed_ratio"] <= SPEED_TOLERANCE, (context, report)
    assert report["joint_speed_ratio"] <= SPEED_TOLERANCE, (context, report)


def pose_chunk(t0: float, positions: np.ndarray, quat: np.ndarray, dt_s: float = 0.05) -> ActionChunk:
    n = len(positions)
    return ActionChunk.from_arrays(t0, dt_s, positions_m=positions, quaternions_xyzw=np.tile(quat, (n, 1)))


def stream_towards(executor: FrankaExecutor, goal: np.ndarray, quat: np.ndarray, speed_m_s: float,
                   duration_s: float, rate_hz: float = 20.0) -> int:
    """Chunks along the line from the measured TCP to ``goal`` at ``speed_m_s`` (wall clock); returns rejections."""
    t_start = time.monotonic()
    p0 = executor.state.measured_tcp_m.copy()
    direction = goal - p0
    length = float(np.linalg.norm(direction))
    rejected = 0
    k = 0
    while time.monotonic() - t_start < duration_s:
        now = time.monotonic()
        s = np.minimum((now - t_start + 0.05 * np.arange(12)) * speed_m_s, length)
        try:
            executor.execute(pose_chunk(now, p0 + np.outer(s / max(length, 1e-9), direction), quat))
        except ChunkRejectedError:
            rejected += 1
        k += 1
        time.sleep(max(0.0, t_start + k / rate_hz - time.monotonic()))
    return rejected


def joint_chunk(t0: float, q_rows: np.ndarray, dt_s: float = 0.05) -> ActionChunk:
    return ActionChunk.from_arrays(t0, dt_s, joint_positions_rad=q_rows)


def between_streams(executor: FrankaExecutor, i: int, ready: np.ndarray,
                    ignore: tuple[type[BaseException], ...] = (ChunkRejectedError, AssertionError)) -> None:
    """After stream ``i``: recover from a fault, and every 50th stream stop and go back to ``ready`` (otherwise each
    stream starts where the last ended); a failed return (``ignore``) is left as it is."""
    if executor.state.fault is not None:
        executor.wait_stopped(10.0)
        executor.recover()
        executor.enable(True)
    if i % 50 == 49:
        executor.stop()
        executor.wait_stopped(10.0)
        executor.enable(True)
        try:
            go_to_joints(executor, ready)
        except ignore:
            pass


def go_to_joints(executor: FrankaExecutor, q_goal: np.ndarray, timeout_s: float = 60.0) -> None:
    """Joint chunks to ``q_goal`` (steps within the jump limit) until the measured joints are within 0.02 rad."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        q = executor.state.joint_positions_rad
        if np.abs(q - q_goal).max() < 0.02:
            return
        now = time.monotonic()
        step = np.clip(q_goal - q, -0.3, 0.3)
        executor.execute(joint_chunk(now, q + np.linspace(0.0, 1.0, 10)[:, None] * step))
        time.sleep(0.1)
    raise AssertionError(f"did not reach {q_goal} within {timeout_s} s: at {executor.state.joint_positions_rad}")


# --- regression: every case under *Why* in issue 9 ---------------------------------------------------------------

def test_streaming_to_an_unreachable_in_box_corner_keeps_the_measured_arm_inside(franky_sim_fast):
    """Issue: every command inside the box, yet the measured TCP left it by 38.6 / 556 mm, joint 4 passed its
    hardware limit, joint speeds up to 11.9 rad/s, then a planner error."""
    executor, recorder = start(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        quat = executor.state.ee_quaternion_xyzw.copy()
        n0 = len(recorder)
        counts = executor.interventions

        def stuck() -> int:
            return counts["clamped_containment"] + counts["projected_unreachable"]

        t_end = time.monotonic() + 120.0  # franky-sim's pace under load: 0.1-4x real time
        while stuck() == 0 and time.monotonic() < t_end:
            stream_towards(executor, np.array([0.75, 0.40, 0.05]), quat, 0.25, 0.5)
        stream_towards(executor, np.array([0.75, 0.40, 0.05]), quat, 0.25, 1.5)  # keep pushing at the corner
        executor.stop()
        assert executor.wait_stopped(20.0) is not None
        report = measured_report(executor, recorder.since(n0))
        assert_inside(report, "corner")
        assert executor.state.fault is None, executor.state.fault
        assert stuck() > 0, counts.snapshot()


def test_joint_chunks_are_kept_in_the_workspace(franky_sim_fast):
    """Issue: joint-space chunks were never checked against the workspace (TCP 0.35-0.54 m outside the box)."""
    executor, recorder = start(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        n0 = len(recorder)
        q = executor.state.joint_positions_rad.copy()
        # Fold the arm backwards over its base: joint 1 round, joint 2 back: the TCP would go to x < 0.
        goal = q + np.array([1.2, -0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
        t_end = time.monotonic() + 120.0
        while time.monotonic() < t_end and executor.interventions["clamped_containment"] < 25:
            q_now = executor.state.joint_positions_rad
            step = np.clip(goal - q_now, -0.4, 0.4)
            try:
                executor.execute(joint_chunk(time.monotonic(), q_now + np.linspace(0, 1, 10)[:, None] * step))
            except ChunkRejectedError:
                pass
            time.sleep(0.1)
        report = measured_report(executor, recorder.since(n0))
        assert_inside(report, "joint chunks")
        assert executor.interventions["clamped_containment"] > 0
        assert executor.state.fault is None


def ramp_joint4(executor: FrankaExecutor, until_rad: float, timeout_s: float = 120.0) -> None:
    """Joint chunks asking joint 4 to go 0.3 rad past its upper limit, until it is above ``until_rad``."""
    limit = executor.guard.hard_upper_rad[3]
    t_end = time.monotonic() + timeout_s
    while executor.state.joint_positions_rad[3] < until_rad:
        if time.monotonic() > t_end:  # a bounded wait, not a speed check
            pytest.fail(f"joint 4 stuck at {executor.state.joint_positions_rad[3]:.3f} rad")
        q_now = executor.state.joint_positions_rad.copy()
        rows = np.tile(q_now, (10, 1))
        rows[:, 3] = np.minimum(q_now[3] + np.linspace(0.0, 0.45, 10), limit + 0.3)
        executor.execute(joint_chunk(time.monotonic(), rows))
        time.sleep(0.1)


def move_joint4_away(executor: FrankaExecutor, by_rad: float) -> None:
    """Chunks (re-sent like a policy would, franky-sim may run at 0.05x real time) moving joint 4 away."""
    q_start = executor.state.joint_positions_rad.copy()
    goal = q_start[3] - by_rad
    t_end = time.monotonic() + 90.0
    while executor.state.joint_positions_rad[3] > q_start[3] - 0.8 * by_rad:
        if time.monotonic() >= t_end:
            pytest.fail(f"joint 4 did not move away: {executor.state.joint_positions_rad[3]:.3f} rad")
        q_now = executor.state.joint_positions_rad.copy()
        rows = np.tile(q_now, (10, 1))
        rows[:, 3] = np.linspace(q_now[3], max(goal, q_now[3] - 0.4), 10)
        executor.execute(joint_chunk(time.monotonic(), rows))
        time.sleep(0.2)


#: Boxes wide enough for joint 4 to reach its limit from franky-sim's start pose; no singularity margin (it stops
#: the straightening arm at q4 ~ -0.65 rad first: manipulability 0.0107 there, 0.0068 at -0.6).
WIDE_BOXES = dict(workspace_min_m=(0.0, -0.8, 0.0), workspace_max_m=(1.0, 0.8, 1.2), arm_points_max_m=(1.2, 0.8, 1.4),
                  min_manipulability=0.0)


def test_a_joint_ramp_to_the_limit_does_not_deadlock(franky_sim_fast):
    """Issue: a joint ramp clamped at the margin overshot, halted_joint_limit latched, and chunks moving away were
    accepted but never executed, with no fault. Now: joint 4 ramps towards (and is asked past) its upper limit
    -0.1518 rad, the measured joint never passes the hardware limit, and a chunk moving away is executed."""
    executor, recorder = start(franky_sim_fast.host, watchdog_timeout_s=5.0,
                               envelope=SafetyEnvelopeConfig(**WIDE_BOXES))
    with executor:
        n0 = len(recorder)
        limit = executor.guard.hard_upper_rad[3]
        ramp_joint4(executor, limit - 0.12)
        for _ in range(10):  # keep asking for 0.3 rad past the limit
            q_now = executor.state.joint_positions_rad
            executor.execute(joint_chunk(time.monotonic(), np.tile(np.r_[q_now[:3], min(q_now[3] + 0.4, limit + 0.3),
                                                                      q_now[4:]], (5, 1))))
            time.sleep(0.1)
        report = measured_report(executor, recorder.since(n0))
        assert report["joint_past_hw_rad"] == 0.0, report
        assert executor.state.joint_positions_rad[3] < limit
        assert executor.state.fault is None and executor.interventions["clamped_joint_limit"] > 0
        move_joint4_away(executor, 0.3)


def test_an_arm_past_its_margin_moves_away_and_never_further(franky_sim_fast):
    """The arm is *past* the command margin (left there by an executor configured with tiny margins), 30 mrad inside
    the halt threshold: the next executor does not fault on connecting, never commands it further out, and executes
    a chunk moving it away (no deadlock). (Parked 5 mrad from the halt threshold, franky-sim's stale velocity for a
    new client crept the arm 5-8 mrad outwards under load and the halt rule rightly fired.)"""
    no_margin = SafetyEnvelopeConfig(joint_limit_margin_rad=0.015, joint_halt_margin_rad=0.0, **WIDE_BOXES)
    executor, _ = start(franky_sim_fast.host, watchdog_timeout_s=5.0, envelope=no_margin)
    with executor:
        limit = executor.guard.hard_upper_rad[3]
        ramp_joint4(executor, limit - 0.06)
        executor.stop()
        assert executor.wait_stopped(20.0) is not None
    executor, recorder = start(franky_sim_fast.host, watchdog_timeout_s=5.0,
                               envelope=SafetyEnvelopeConfig(**WIDE_BOXES))
    with executor:
        q4 = executor.state.joint_positions_rad[3]
        assert q4 > limit - executor.config.envelope.joint_limit_margin_rad  # past the margin: a violated limit
        n0 = len(recorder)
        for _ in range(10):  # asked further out: held where it is
            rows = np.tile(executor.state.joint_positions_rad, (10, 1))
            rows[:, 3] = np.linspace(q4, limit + 0.2, 10)
            executor.execute(joint_chunk(time.monotonic(), rows))
            time.sleep(0.1)
        q4_max = max(snap.joint_positions_rad[3] for snap in recorder.since(n0))
        assert q4_max < q4 + 0.005 and executor.state.fault is None
        move_joint4_away(executor, 0.3)
        assert executor.state.fault is None


def test_a_measured_violation_halts_with_a_named_fault_that_recover_clears():
    """The halt logic on the measured state, on snapshots built here (a franky-sim arm cannot be pushed past the
    checked commands on purpose): worse than at connect -> halt fault; after a recovery only getting worse again
    halts, moving back in does not."""
    executor = FrankaExecutor(ExecutorConfig(robot_host="127.0.0.1"))  # not started: no robot needed
    e = executor.config.envelope
    q = READY_Q.copy()
    points = executor.kinematics.check_points(q)

    def snap(q4: float) -> RobotSnapshot:
        qq = q.copy()
        qq[3] = q4
        return RobotSnapshot(time_s=0.0, joint_positions_rad=qq, measured_tcp_m=points["tcp"],
                             measured_elbow_m=points["elbow"], measured_wrist_m=points["wrist"])

    limit = executor.guard.hard_upper_rad[3]
    threshold = limit - e.joint_halt_margin_rad
    executor._check_measured(0.0, snap(-1.0))  # first reading: the baseline
    executor._check_measured(0.0, snap(-1.0))
    assert executor._fault is None
    executor._check_measured(0.0, snap(threshold + 0.01))
    fault = executor._fault
    assert fault is not None and fault.startswith("halted: measured joint 4"), fault
    assert executor.interventions["halted_measured"] == 1 and executor.diagnostics()["fault"] == fault
    # What recover() does besides franky's recover_from_errors: the baseline is where the arm is now.
    executor._halt_baseline = executor._measured_excess(snap(threshold + 0.01))
    executor._fault = None
    executor._check_measured(0.0, snap(threshold + 0.005))  # moving back in: fine
    assert executor._fault is None
    executor._check_measured(0.0, snap(threshold + 0.02))  # further out again: halt
    assert executor._fault is not None and executor.interventions["halted_measured"] == 2


def test_chunk_time_and_sources(franky_sim_fast):
    """Issue: a chunk 1000 s in the future ran at once; an older-stamped chunk overrode a newer one; two sources
    alternating made the arm dither unnoticed; the jump check used the plan, not the arm."""
    executor, recorder = start(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        s = executor.state
        p0, quat = s.measured_tcp_m.copy(), s.ee_quaternion_xyzw.copy()
        target = p0 + np.array([0.0, 0.066, 0.0])
        with pytest.raises(ChunkRejectedError, match="future"):
            executor.execute(pose_chunk(time.monotonic() + 1000.0, np.tile(target, (5, 1)), quat))
        assert executor.interventions["rejected_future"] == 1 and executor.plan is None
        # Within the lead: held until due (the arm does not start early).
        due = time.monotonic() + 0.6
        executor.execute(pose_chunk(due, np.tile(p0 + np.array([0.0, 0.02, 0.0]), (5, 1)), quat))
        assert executor.interventions["held_until_due"] == 1
        while time.monotonic() < due - 0.1:
            assert np.linalg.norm(executor.state.measured_tcp_m - p0) < 0.002
            time.sleep(0.02)
        wait_for(lambda: executor.state.measured_tcp_m[1] > p0[1] + 0.015, 30.0, "the held chunk executing")
        # Older stamp after a newer one: rejected and counted; the newer plan continues.
        now = time.monotonic()
        p1 = executor.state.measured_tcp_m.copy()
        executor.execute(pose_chunk(now, np.tile(p1, (10, 1)), quat))
        with pytest.raises(ChunkRejectedError, match="older"):
            executor.execute(pose_chunk(now - 0.2, np.tile(p1 + np.array([0.0, -0.05, 0.0]), (10, 1)), quat))
        assert executor.interventions["rejected_stale_stamp"] == 1
        # Two sources alternating every 50 ms, each stamping its chunks 0.1 s "late": whichever is older loses,
        # the arm follows one of them instead of dithering.
        rejected = 0
        for k in range(20):
            stamp = time.monotonic() - (0.1 if k % 2 else 0.0)
            goal = p1 + np.array([0.0, 0.03 if k % 2 == 0 else -0.03, 0.0])
            try:
                executor.execute(pose_chunk(stamp, np.tile(goal, (10, 1)), quat))
            except ChunkRejectedError:
                rejected += 1
            time.sleep(0.05)
        assert rejected >= 9 and executor.interventions["rejected_stale_stamp"] >= 10


@pytest.mark.slow  # needs the sim arm to lag > 0.1 m behind its plan; fresh-clone run: it lagged 0.078 m (flaky)
def test_the_jump_check_measures_from_the_arm(franky_sim_fast):
    """Issue: a chunk starting at the arm's measured position was rejected while the arm lagged its plan."""
    executor, _ = start(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        s = executor.state
        p0, quat = s.measured_tcp_m.copy(), s.ee_quaternion_xyzw.copy()
        # A plan that runs away at 1 m/s (the arm follows at max_speed_m_s = 0.25 m/s on the robot's clock).
        t0 = time.monotonic()
        far = p0 + np.array([0.0, 0.2, 0.0])
        for k in range(8):
            now = time.monotonic()
            steps = p0 + np.outer(np.minimum((now - t0 + 0.05 * np.arange(10)) * 1.0, 0.2), [0.0, 1.0, 0.0])
            executor.execute(pose_chunk(now, steps, quat))
            time.sleep(0.05)
        plan_target = executor.plan.positions_m[-1]
        wait_for(lambda: np.linalg.norm(executor.state.measured_tcp_m - p0) > 0.005, 20.0, "motion")
        arm = executor.state.measured_tcp_m.copy()
        assert np.linalg.norm(plan_target - arm) > executor.config.envelope.max_target_jump_m or \
            np.linalg.norm(far - arm) > 0.1
        executor.execute(pose_chunk(time.monotonic(), np.tile(arm, (10, 1)), quat))  # re-anchored at the arm
        with pytest.raises(ChunkRejectedError, match="jump"):  # far from both the arm and the plan
            executor.execute(pose_chunk(time.monotonic(), np.tile(arm + np.array([0.0, -0.3, 0.0]), (10, 1)), quat))


def test_loop_robustness(franky_sim_fast):
    """Issue: a listener's exception latched a control fault; an unexpected exception ended the loop while
    ``connected`` stayed true and execute() kept accepting chunks."""
    executor, _ = start(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        def bad_listener(snap: RobotSnapshot) -> None:
            raise ValueError("listener bug")

        executor.add_state_listener(bad_listener)
        wait_for(lambda: executor.interventions["listener_errors"] > 20, 10.0, "listener errors")
        assert executor.state.fault is None and executor.state.connected
        executor.remove_state_listener(bad_listener)

        def fatal_listener(snap: RobotSnapshot) -> None:
            raise SystemExit("the loop thread dies")

        executor.add_state_listener(fatal_listener)
        wait_for(lambda: not executor.loop_alive, 10.0, "the loop to end")
        state = executor.state
        assert not state.connected and state.fault.startswith("internal")
        with pytest.raises(ExecutionRefusedError, match="not running"):
            executor.execute(pose_chunk(time.monotonic(), np.tile(state.measured_tcp_m, (3, 1)),
                                        state.ee_quaternion_xyzw))


@pytest.mark.parametrize("speed_m_s", [0.1, 0.3, pytest.param(0.5, marks=pytest.mark.slow)])
# 0.5 m/s is slow-only: franky-sim reached only 0.382-0.432 m/s in two fresh-clone runs, and 0.398 on the
# real-time-paced simulator in session 9's idle fresh clone (needs 80 %)
def test_e_stop_from_speed_comes_to_rest_with_a_planned_stop(franky_sim, speed_m_s):
    """From 0.1, 0.3 and 0.5 m/s (measured on the robot's clock; speed and acceleration limits raised for this test):
    franky's planned stop, time and distance to rest reported, nothing sent afterwards, the arm at rest."""
    # The simulator is paced at real time: the plans are stamped on the wall clock and the speed is measured on the
    # robot's, so with the free-running simulator the robot-clock speed of a plan fell with the simulator's lead over
    # the wall clock (CI: fastest 0.245 m/s, never 0.24 at a check; the rate here was 0.6-1.2x).
    # The boxes are widened in y too: the run-up goes from y = -0.25 m towards +0.3 m, and with the default box
    # (|y| <= 0.40 m) the braking envelope already caps the speed on the way (fastest 0.234 of the needed 0.24 m/s
    # in an idle fresh-clone run). This test is about the stop, not the boxes.
    # The TCP acceleration limits are raised too: every joint motion's acceleration factor keeps the sum over the
    # joints of |J_i| x their acceleration within them (CommandGate.joint_dynamics_factors); at 4 m/s^2 and 5 rad/s^2
    # that left the joints 1 rad/s^2 (the braking floor) and the run-up reached only 0.23 / 0.25 of 0.3 / 0.5 m/s;
    # at 10 m/s^2 and 30 rad/s^2 (4 rad/s^2) 0.36 of 0.5 m/s. At these (8 rad/s^2 of 10) it is the old run-up.
    executor, recorder = start(franky_sim.host, watchdog_timeout_s=5.0,
                               envelope=SafetyEnvelopeConfig(max_speed_m_s=0.6, max_acceleration_m_s2=20.0,
                                                             max_rotation_acceleration_rad_s2=60.0,
                                                             max_joint_speed_rad_s=2.5,
                                                             max_joint_acceleration_rad_s2=10.0,
                                                             workspace_min_m=(0.25, -0.8, 0.05),
                                                             workspace_max_m=(0.75, 0.8, 0.70),
                                                             arm_points_min_m=(-0.30, -0.9, 0.05),
                                                             arm_points_max_m=(0.90, 0.9, 1.10)))
    with executor:
        quat = executor.state.ee_quaternion_xyzw.copy()
        start_point = executor.state.measured_tcp_m.copy()
        start_point[1] = -0.25
        while np.linalg.norm(executor.state.measured_tcp_m - start_point) > 0.01:
            stream_towards(executor, start_point, quat, 0.1, 0.5)
        n0 = len(recorder)
        reached, fastest = None, 0.0
        t_end = time.monotonic() + 120.0
        while reached is None and executor.state.measured_tcp_m[1] < 0.3 and time.monotonic() < t_end:
            p = executor.state.measured_tcp_m
            # A plan moving at speed_m_s, 5 cm ahead of the arm, 1 s long: each motion ends at rest, and a plan this
            # long keeps its end out of braking reach even when the loaded test loop replaces it late.
            lead = 0.05 + speed_m_s * 0.05 * np.arange(20)
            plan = p + np.outer(lead, [0.0, 1.0, 0.0])
            plan[:, 1] = np.minimum(plan[:, 1], 0.7)  # inside the widened box
            executor.execute(pose_chunk(time.monotonic(), plan, quat))
            snaps = recorder.since(max(n0, len(recorder) - 400))
            speed = windowed_speed_m_s(np.array([x.robot_time_s for x in snaps]),
                                       np.array([x.measured_tcp_m for x in snaps]), 0.05)
            fastest = max(fastest, float(speed.max(initial=0.0)))
            if speed.size and speed[-1] >= 0.8 * speed_m_s:  # franky-sim under load: 0.432 of 0.5 m/s seen
                reached = float(speed[-1])
                break
            time.sleep(0.02)
        assert reached is not None, f"did not reach {speed_m_s} m/s on the robot's clock (fastest {fastest:.3f})"
        sent_before = executor.state.commands_sent
        assert executor.stop() is True
        report = executor.wait_stopped(30.0)
        assert report is not None and report.kind == "planned" and report.reason == "stop", report
        assert report.speed_at_stop_m_s > 0.5 * speed_m_s, report
        assert 0.0 < report.distance_to_rest_m < 0.15 and report.time_to_rest_s > 0.0, report
        sent_at_stop = executor.state.commands_sent
        # The loop drains requests before commanding, so at most the command of the tick that was already running
        # when stop() was queued can leave after sent_before was read (seen once: 189 vs 188).
        assert sent_at_stop - sent_before <= 1
        n_now = len(recorder)
        wait_for(lambda: len(recorder) > n_now + 100, 20.0, "100 more state samples")
        assert executor.state.commands_sent == sent_at_stop  # nothing sent after the stop
        last = np.array([x.measured_tcp_m for x in recorder.since(len(recorder) - 20)])
        assert np.ptp(last, axis=0).max() < 2e-3  # at rest
        diag = executor.diagnostics()
        assert diag["last_stop.kind"] == "planned" and float(diag["last_stop.distance_to_rest_m"]) > 0.0
        assert executor.interventions["hard_stops"] == 0


def test_close_releases_the_gripper_for_the_next_executor(franky_sim_fast):
    """Issue: close() left the gripper connection open; the next executor blocked forever in franky.Gripper()."""
    for _ in range(2):
        executor = FrankaExecutor(ExecutorConfig(robot_host=franky_sim_fast.host)).start()
        with executor:
            assert executor.wait_connected(30.0)
            wait_for(lambda: executor.state.gripper_width_m is not None, 20.0, "a gripper reading")
    executor = FrankaExecutor(ExecutorConfig(robot_host=franky_sim_fast.host)).start()
    with executor:
        assert executor.wait_connected(30.0)
        wait_for(lambda: executor.state.gripper_width_m is not None, 20.0, "a gripper reading (third client)")


# --- property: the measured state over random adversarial streams -------------------------------------------------

#: Worst value of every measure over all streams run so far (printed by the tests, for the report).
WORST: dict[str, float] = {}
STREAM_KINDS = ("corner", "outside", "joint_fold", "joint_random", "jump", "rotation", "stamps", "interleaved")


def adversarial_stream(executor: FrankaExecutor, rng: np.random.Generator, kind: str, duration_s: float) -> None:
    """Send one short adversarial stream of chunks (every refusal/rejection is expected and ignored)."""
    e = executor.config.envelope
    state = executor.state
    quat = state.ee_quaternion_xyzw.copy()
    t_start = time.monotonic()
    corner = np.where(rng.random(3) < 0.5, e.lower_m, e.upper_m)
    outside = rng.uniform(e.lower_m - 0.4, e.upper_m + 0.4)
    q_goal = state.joint_positions_rad + rng.uniform(-1.0, 1.0, 7)
    k = 0
    while time.monotonic() - t_start < duration_s:
        now = time.monotonic()
        s = executor.state
        try:
            if kind in ("corner", "outside"):
                goal = corner if kind == "corner" else outside
                d = goal - s.measured_tcp_m
                steps = s.measured_tcp_m + np.outer(np.linspace(0.0, 1.0, 10), d * min(1.0, 0.09 / max(
                    np.linalg.norm(d), 1e-9)))
                executor.execute(pose_chunk(now, steps, quat))
            elif kind in ("joint_fold", "joint_random"):
                goal = q_goal if kind == "joint_random" else s.joint_positions_rad + np.array(
                    [0.4, -0.4, 0.3, 0.4, 0.0, -0.4, 0.0])
                step = np.clip(goal - s.joint_positions_rad, -0.45, 0.45)
                executor.execute(joint_chunk(now, s.joint_positions_rad + np.linspace(0, 1, 10)[:, None] * step))
            elif kind == "jump":
                executor.execute(pose_chunk(now, np.tile(s.measured_tcp_m + rng.normal(0, 0.3, 3), (10, 1)), quat))
            elif kind == "rotation":
                axis = rng.normal(size=3)
                axis /= np.linalg.norm(axis)
                angle = rng.uniform(0.3, 0.5)
                turn = np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])
                x1, y1, z1, w1 = turn
                x2, y2, z2, w2 = s.ee_quaternion_xyzw
                q_new = np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                                  w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])
                executor.execute(ActionChunk.from_arrays(now, 0.05, positions_m=np.tile(s.measured_tcp_m, (10, 1)),
                                                         quaternions_xyzw=np.tile(q_new, (10, 1))))
            elif kind == "stamps":
                offset = rng.choice([1000.0, -5.0, 0.5, 0.0, -0.3])
                executor.execute(pose_chunk(now + offset, np.tile(corner, (10, 1)) * 0.2 + 0.8 * s.measured_tcp_m,
                                            quat))
            else:  # interleaved sources
                goal = corner if k % 2 else outside
                d = goal - s.measured_tcp_m
                steps = s.measured_tcp_m + np.outer(np.linspace(0.0, 1.0, 10), d * min(1.0, 0.09 / max(
                    np.linalg.norm(d), 1e-9)))
                executor.execute(pose_chunk(now - (0.05 if k % 2 else 0.0), steps, quat))
        except (ChunkRejectedError, ExecutionRefusedError):
            pass
        k += 1
        time.sleep(0.04)


def run_streams(host: str, n_streams: int, seed: int, duration_s: float) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    executor, recorder = start(host, watchdog_timeout_s=2.0)
    reports = []
    with executor:
        ready = executor.state.joint_positions_rad.copy()
        for i in range(n_streams):
            kind = STREAM_KINDS[i % len(STREAM_KINDS)] if i < len(STREAM_KINDS) else str(rng.choice(STREAM_KINDS))
            n0 = len(recorder)
            adversarial_stream(executor, rng, kind, duration_s)
            report = measured_report(executor, recorder.since(n0))
            report["kind"], report["stream"] = kind, i
            reports.append(report)
            assert_inside(report, f"stream {i} ({kind}), seed {seed}")
            WORST.update({k: max(WORST.get(k, 0.0), v) for k, v in report.items() if isinstance(v, float)})
            if executor.state.fault is not None:
                assert executor.state.fault.startswith(("halted", "control error")), executor.state.fault
            between_streams(executor, i, ready)
        executor.stop()
        executor.wait_stopped(10.0)
        final = measured_report(executor, recorder.since(0))
    assert_inside(final, f"whole run, seed {seed}")
    return reports


# In the default run since 2026-12-03 (issue 9 asks for >= 200 streams there): 94 s at load 1.4-3.7; passed 5 of 5
# runs at load 5-8 with the braking envelope (docs/driver.md)
def test_measured_state_stays_inside_over_adversarial_streams(franky_sim_fast):
    """200 short streams (0.4 s each, every kind 25 times on average, chained: each starts where the last ended);
    the slow variant runs 600 longer ones."""
    reports = run_streams(franky_sim_fast.host, 200, seed=9, duration_s=0.4)
    assert {r["kind"] for r in reports} == set(STREAM_KINDS)
    print(f"\nworst over {len(reports)} streams: {WORST}")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 600 streams took 488 s at load 5-8; another run hit the module's 600 s timeout
def test_measured_state_stays_inside_over_many_adversarial_streams(franky_sim_fast):
    reports = run_streams(franky_sim_fast.host, 600, seed=90, duration_s=0.6)
    assert len(reports) == 600
    print(f"\nworst over {len(reports)} streams: {WORST}")
