"""The franky executor against a real franky-sim FR3 server (no mocks): reaching, streaming smoothness,
preemption, e-stop, watchdog, losing the robot and getting it back, joint targets and the gripper.

Durations are never asserted; waits have timeouts; the e-stop is measured in state samples / control periods.
"""

from __future__ import annotations

import functools
import time

import franky
import numpy as np
import pytest

from gpc_ros.control.chunk import ActionChunk
from gpc_ros.control.executor import ExecutionRefusedError, ExecutorConfig, FrankaExecutor
from gpc_ros.control.gripper import GripperConfig
from gpc_ros.control.motion_metrics import windowed_speed_m_s
from gpc_ros.control.timing import TimingConfig
from gpc_ros.testing.executor import Recorder, start_executor
from gpc_ros.testing.spin import wait_until

pytestmark = pytest.mark.timeout(120)


wait_for = functools.partial(wait_until, period_s=0.01)


def line_chunk(now: float, p_start: np.ndarray, q: np.ndarray, velocity_m_s: np.ndarray, n: int = 16,
               dt_s: float = 0.05, t_origin: float | None = None, gripper_m: float | None = None) -> ActionChunk:
    """Steps along a straight line through ``p_start`` at ``t_origin`` moving at ``velocity_m_s``."""
    t_origin = now if t_origin is None else t_origin
    times = now + dt_s * np.arange(n)
    pos = p_start + np.outer(times - t_origin, velocity_m_s)
    return ActionChunk.from_arrays(now, dt_s, positions_m=pos, quaternions_xyzw=np.tile(q, (n, 1)),
                                   gripper_width_m=None if gripper_m is None else np.full(n, gripper_m))


def stream_line(executor: FrankaExecutor, p0, q0, velocity_m_s, duration_s: float, chunk_rate_hz: float,
                **chunk_kwargs) -> tuple[float, float]:
    """Send chunks along one line at ``chunk_rate_hz`` for ``duration_s``; returns (t_start, t_end)."""
    t_start = time.monotonic()
    k = 0
    while time.monotonic() - t_start < duration_s:
        executor.execute(line_chunk(time.monotonic(), p0, q0, velocity_m_s, t_origin=t_start, **chunk_kwargs))
        k += 1
        time.sleep(max(0.0, t_start + k / chunk_rate_hz - time.monotonic()))
    return t_start, time.monotonic()


def commands_on_time(recorder: Recorder, t0: float, t1: float, window_ends: np.ndarray, window_s: float,
                     max_gap_s: float) -> np.ndarray:
    """Per speed window (ending at robot times ``window_ends``): whether every gap between the executor's commands
    that touches it (robot clock, from the snapshots' ``commands_sent``) was at most ``max_gap_s``."""
    snaps = [s for s in recorder.since(0) if t0 <= s.time_s <= t1]
    sent = np.array([s.commands_sent for s in snaps])
    robot_t = np.array([s.robot_time_s for s in snaps])
    times = robot_t[1:][np.diff(sent) > 0]  # the first snapshot after each command
    out = np.zeros(len(window_ends), dtype=bool)
    for k, end in enumerate(window_ends):
        inside = times[(times > end - window_s) & (times <= end)]
        before = times[times <= end - window_s]
        after = times[times > end]
        marks = np.concatenate([before[-1:], inside, after[:1]])
        out[k] = len(marks) >= 2 and float(np.max(np.diff(marks))) <= max_gap_s
    return out


def test_a_chunk_is_executed_to_its_targets_with_the_gripper(franky_sim_fast):
    executor, _ = start_executor(franky_sim_fast.host, watchdog_timeout_s=60.0)
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        goal = p0 + np.array([0.05, 0.06, -0.05])
        n = 21
        now = time.monotonic()
        pos = p0 + np.linspace(0.0, 1.0, n)[:, None] * (goal - p0)
        executor.execute(ActionChunk.from_arrays(now, 0.05, positions_m=pos, quaternions_xyzw=np.tile(q0, (n, 1)),
                                                 gripper_width_m=np.full(n, 0.02)))
        wait_for(lambda: np.linalg.norm(executor.state.ee_position_m - goal) < 0.003, 30.0, "the goal pose")
        wait_for(lambda: abs(executor.state.gripper_width_m - 0.02) < 0.003, 30.0, "the gripper width")
        angle = 2 * np.arccos(min(1.0, abs(float(executor.state.ee_quaternion_xyzw @ q0))))
        assert angle < 0.02
        assert executor.state.fault is None and executor.state.commands_sent > 0


@pytest.mark.parametrize("chunk_rate_hz", [10.0, 30.0])
def test_streamed_chunks_move_without_stop_and_go(franky_sim, chunk_rate_hz):
    executor, recorder = start_executor(franky_sim.host, timing=TimingConfig(blend_mode="crossfade"))
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        nominal = 0.1
        t_start, t_end = stream_line(executor, p0, q0, np.array([0.0, nominal, 0.0]), 2.5, chunk_rate_hz)
        # Mid-path (after the start-up ramp, before the end), measured on the robot's own clock: franky-sim runs
        # at a load-dependent pace, so the nominal speed is converted with the pace measured over the same span.
        # On a loaded machine the arm may still be catching up (accelerating) mid-path, or settle back to nominal
        # after overshooting while catching up; so "no stop-and-go" is checked as: it got up to at least half the
        # nominal speed, and never dropped below half of min(nominal, the speed it had already reached).
        t, p, pace = recorder.robot_track(t_start + 0.7, t_end - 0.3)
        # The limits hold per unit of the robot's time: a plan faster than max_speed_m_s on the robot's clock (a
        # franky-sim slowed down by load) is followed at max_speed_m_s.
        nominal_robot_clock = min(nominal / pace, executor.config.envelope.max_speed_m_s)
        speed, ends = windowed_speed_m_s(t, p, return_end_times=True)
        assert len(speed) > 20
        assert speed.max() > 0.5 * nominal_robot_clock, (speed.max(), nominal_robot_clock, pace)
        floor = 0.5 * np.minimum(np.maximum.accumulate(speed), nominal_robot_clock)
        # The promise is about the driver: while it gets its commands out every control period, the arm does not
        # stop and go. A starved test machine (CI under load, a CPU quota) delays the executor's own loop: measured
        # under a 0.8-core quota, commands 45-75 ms of robot time apart (2-4 periods), each motion reached its
        # one-period-ahead target and the arm slowed to 0.05-0.09 m/s. Windows in which a command came late are not
        # judged; at least half of them must be.
        on_time = commands_on_time(recorder, t_start + 0.5, t_end - 0.3, ends, 0.1,
                                   2.5 * executor.config.control_period_s)
        assert on_time.sum() >= 0.5 * len(on_time), (
            f"the executor sent its commands on time in only {on_time.sum()} of {len(on_time)} windows: the machine "
            f"starved the driver's loop (pace {pace:.2f})")
        margin = np.where(on_time, speed - floor, np.inf)
        worst = int(np.argmin(margin))
        assert speed[worst] > floor[worst], (
            f"speed dropped to {speed[worst]:.3f} m/s mid-path (floor {floor[worst]:.3f} m/s; nominal "
            f"{nominal_robot_clock:.3f} m/s on the robot's clock, pace {pace:.2f})")
        assert executor.interventions["watchdog_stops"] == 0


def test_a_new_chunk_preempts_the_running_one(franky_sim_fast):
    executor, recorder = start_executor(franky_sim_fast.host, watchdog_timeout_s=60.0,
                                        timing=TimingConfig(blend_mode="replace"))
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        executor.execute(line_chunk(time.monotonic(), p0, q0, np.array([0.0, 0.1, 0.0]), n=40))  # 2 s to +0.2 m
        wait_for(lambda: executor.state.ee_position_m[1] > p0[1] + 0.03, 10.0, "motion along +y")
        y_turn = executor.state.ee_position_m[1]
        back = p0 + np.array([0.0, y_turn - p0[1], 0.0])
        executor.execute(line_chunk(time.monotonic(), back, q0, np.array([0.0, -0.1, 0.0]), n=10))
        final = back[1] - 0.1 * 0.05 * 9  # the second chunk's last target
        wait_for(lambda: abs(executor.state.ee_position_m[1] - final) < 0.003, 30.0, "the second chunk's end")
        t, p = recorder.track(0.0, np.inf)
        # The arm lags the plan (franky-sim's clock is not the wall clock), so it may coast past y_turn, but it
        # turned back long before the first chunk's end at +0.195 m.
        assert p[:, 1].max() < p0[1] + 0.195 - 0.05


def test_e_stop_halts_within_one_control_period_and_refuses_chunks(franky_sim_fast):
    executor, recorder = start_executor(franky_sim_fast.host, watchdog_timeout_s=5.0)
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        executor.execute(line_chunk(time.monotonic(), p0, q0, np.array([0.0, 0.1, 0.0]), n=40))
        wait_for(lambda: executor.state.ee_position_m[1] > p0[1] + 0.03, 10.0, "motion along +y")
        samples_before = executor.state.state_samples
        assert executor.stop() is True
        samples_per_period = executor.config.state_rate_hz / executor.config.control_rate_hz
        assert executor.stop_handled_at_sample - samples_before <= samples_per_period
        sent_at_stop = executor.state.commands_sent
        with pytest.raises(ExecutionRefusedError, match="disabled"):
            executor.execute(line_chunk(time.monotonic(), p0, q0, np.zeros(3)))
        n_now = len(recorder.snaps)
        wait_for(lambda: len(recorder.snaps) > n_now + 100, 10.0, "100 more state samples")
        assert executor.state.commands_sent == sent_at_stop  # not a single motion after the stop
        with recorder.lock:
            last = [s.ee_position_m for s in recorder.snaps[-20:]]
        assert np.ptp(np.array(last), axis=0).max() < 1e-3  # standing still
        assert last[-1][1] < p0[1] + 0.2 - 0.05  # stopped well short of the chunk's end


def test_watchdog_stops_the_arm_when_chunks_stop_coming(franky_sim_fast):
    executor, recorder = start_executor(franky_sim_fast.host, watchdog_timeout_s=0.3)
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        executor.execute(line_chunk(time.monotonic(), p0, q0, np.array([0.0, 0.1, 0.0]), n=40))  # 2 s plan
        wait_for(lambda: executor.state.watchdog_tripped, 5.0, "the watchdog")
        diag = executor.diagnostics()
        assert diag["watchdog_trips"] == "1" and diag["interventions.watchdog_stops"] == "1"
        assert not executor.state.executing
        n_now = len(recorder.snaps)
        wait_for(lambda: len(recorder.snaps) > n_now + 100, 10.0, "100 more state samples")
        with recorder.lock:
            last = np.array([s.ee_position_m for s in recorder.snaps[-20:]])
        assert np.ptp(last, axis=0).max() < 1e-3
        assert last[-1][1] < p0[1] + 0.15  # held, not run to the end of the 0.2 m plan
        executor.execute(line_chunk(time.monotonic(), last[-1], q0, np.zeros(3)))  # a fresh chunk resumes
        assert not executor.watchdog.tripped


def test_losing_the_robot_faults_refuses_and_recovers_on_a_new_server(franky_sim_fast):
    executor, _ = start_executor(franky_sim_fast.host, watchdog_timeout_s=60.0, reconnect_period_s=0.2)
    with executor:
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        executor.execute(line_chunk(time.monotonic(), p0, q0, np.array([0.0, 0.1, 0.0]), n=40))
        wait_for(lambda: executor.state.ee_position_m[1] > p0[1] + 0.02, 10.0, "motion along +y")
        franky_sim_fast.kill()
        # First the state goes stale (connected False at once), then the link counts as lost (typed: franky's
        # NetworkException, or no fresh state for link_timeout_s: a dead franky.Robot keeps its last state).
        wait_for(lambda: not executor.state.connected, 10.0, "the stale state report")
        wait_for(lambda: "lost" in (executor.state.fault or ""), 15.0, "the link-lost fault")
        assert not executor.state.connected
        with pytest.raises(ExecutionRefusedError, match="faulted"):
            executor.execute(line_chunk(time.monotonic(), p0, q0, np.zeros(3)))
        with pytest.raises(ExecutionRefusedError):
            executor.recover(timeout_s=2.0)  # nothing to recover with yet
        franky_sim_fast.start()
        assert executor.wait_connected(30.0)
        wait_for(lambda: executor.state.connected, 5.0, "fresh state from the new server")
        with pytest.raises(ExecutionRefusedError, match="faulted"):  # reconnected, but motion needs recover()
            executor.execute(line_chunk(time.monotonic(), p0, q0, np.zeros(3)))
        executor.recover()
        wait_for(lambda: executor.state.fault is None, 5.0, "the fault to clear")
        home = executor.state.ee_position_m
        goal = home + np.array([0.0, -0.03, 0.0])
        executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05, positions_m=np.tile(goal, (10, 1)),
                                                 quaternions_xyzw=np.tile(q0, (10, 1))))
        wait_for(lambda: np.linalg.norm(executor.state.ee_position_m - goal) < 0.003, 30.0, "motion after recovery")


class PlannerFailsOnce:
    """A real franky.Robot whose ``move`` number ``fail_at`` raises the planner error franky-sim was seen to raise
    once (``Motion planner failed with error code -111``); everything else goes to the real robot."""

    def __init__(self, robot, fail_at: int) -> None:
        self._robot, self._fail_at, self.moves = robot, fail_at, 0

    def move(self, *args, **kwargs):
        self.moves += 1
        if self.moves == self._fail_at:
            raise RuntimeError("Motion planner failed with error code -111")
        return self._robot.move(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._robot, name)

    def __setattr__(self, name, value):
        if name.startswith("_") or name == "moves":
            object.__setattr__(self, name, value)
        else:
            setattr(self._robot, name, value)


def test_with_no_planner_retries_a_planner_error_latches_a_control_fault_but_keeps_the_connection(franky_sim_fast):
    # planner_retries=0: the fault path itself (the automatic resume is test_planner_retry_sim.py's)
    connections = []

    def robot_factory(host: str):
        robot = PlannerFailsOnce(franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore), fail_at=5)
        connections.append(robot)
        return robot

    executor = FrankaExecutor(ExecutorConfig(robot_host=franky_sim_fast.host, watchdog_timeout_s=60.0,
                                             planner_retries=0),
                              robot_factory=robot_factory).start()
    with executor:
        assert executor.wait_connected(20.0)
        wait_for(lambda: np.all(np.isfinite(executor.state.ee_position_m)), 5.0, "a first state reading")
        executor.enable(True)
        s = executor.state
        p0, q0 = s.ee_position_m, s.ee_quaternion_xyzw
        executor.execute(line_chunk(time.monotonic(), p0, q0, np.array([0.0, 0.05, 0.0]), n=40))
        wait_for(lambda: executor.state.fault is not None, 10.0, "the fault report")
        assert executor.state.fault.startswith("control error") and "-111" in executor.state.fault
        assert executor.state.connected and len(connections) == 1  # not mistaken for a lost link
        with pytest.raises(ExecutionRefusedError, match="faulted"):
            executor.execute(line_chunk(time.monotonic(), p0, q0, np.zeros(3)))
        executor.recover()
        wait_for(lambda: executor.state.fault is None, 5.0, "the fault to clear")
        goal = executor.state.ee_position_m + np.array([0.0, -0.03, 0.0])
        executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05, positions_m=np.tile(goal, (10, 1)),
                                                 quaternions_xyzw=np.tile(q0, (10, 1))))
        wait_for(lambda: np.linalg.norm(executor.state.ee_position_m - goal) < 0.003, 30.0, "motion after recovery")
        assert len(connections) == 1


def test_joint_targets_are_executed(franky_sim_fast):
    executor, _ = start_executor(franky_sim_fast.host, watchdog_timeout_s=60.0,
                                 gripper=GripperConfig(enabled=False))
    with executor:
        q0 = executor.state.joint_positions_rad
        goal = q0 + np.array([0.2, 0.0, 0.0, 0.1, 0.0, 0.0, -0.2])
        n = 21
        traj = q0 + np.linspace(0.0, 1.0, n)[:, None] * (goal - q0)
        executor.execute(ActionChunk.from_arrays(time.monotonic(), 0.05, joint_positions_rad=traj))
        wait_for(lambda: np.abs(executor.state.joint_positions_rad - goal).max() < 0.01, 30.0, "the joint goal")
