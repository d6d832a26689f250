"""The Franka executor: follows action chunks on an FR3 through franky, streaming checked targets at a fixed rate.

Surface (like franky's): ``execute(chunk)``, ``stop()``, ``recover()``, ``enable(flag)``, read-only ``state``.
One background thread owns the only ``franky.Robot`` connection (franky-sim and the FCI accept one client) and
makes every franky call, so the caller's threads never block on the robot and never inherit the real-time
scheduling libfranka gives the thread it runs on.

The loop is built like diffusion_policy's real-robot controller: **one command queue** (chunk, stop, recover,
enable) drained every tick, each call waiting for its own result. Each tick (``state_rate_hz``) it reads the robot
state, checks the *measured* arm (joints against their limits, TCP/elbow/wrist against their boxes: a violation
halts with a fault), handles the queued commands, and every ``1 / control_rate_hz`` samples the plan one control
period ahead and sends one asynchronous, preemptive motion built by
:class:`~gpc_ros.control.command_gate.CommandGate` (Cartesian clamp, IK, joint-space containment).

Faults are latched and reported in ``state.fault``; chunks are refused until :meth:`recover` succeeds. They are
classified by exception type: ``franky.NetworkException`` = link lost (the loop reconnects every
``reconnect_period_s`` with a new ``franky.Robot``); other ``franky`` exceptions and franky's ``RuntimeError``
(e.g. ``Motion planner failed``) = control fault, connection kept; anything else = ``internal: ...`` fault (the
arm is stopped). A failing state *read* (a dead ``franky.Robot`` raises ``RuntimeError`` there) or a state whose
robot clock stops advancing for ``link_timeout_s`` also means link lost. A state-listener exception is logged and
counted, never a fault. If the loop thread ends for any
reason, ``state.connected`` turns false and chunks are refused. Execution starts disabled when ``require_enable``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.command_gate import STREAMING_MODES, CommandGate
from gpc_ros.control.envelope import InterventionCounter, SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.gripper import GripperCommander, GripperConfig
from gpc_ros.control.joint_guard import JointSpaceGuard, box_excess_m
from gpc_ros.control.kinematics import FR3Kinematics
from gpc_ros.control.timing import SeamBlender, TimingConfig, sample
from gpc_ros.control.watchdog import Watchdog

logger = logging.getLogger(__name__)

#: Franka's default collision thresholds (franka_ros / franka_ros2 examples): joint torques (Nm), Cartesian
#: forces and torques (N, Nm), used for both the lower (contact) and upper (collision) threshold.
DEFAULT_COLLISION_TORQUES_NM: tuple[float, ...] = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
DEFAULT_COLLISION_FORCES_N: tuple[float, ...] = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
#: A streamed joint motion is not preempted while the robot reports a joint velocity above this many times the
#: running motion's velocity limit (:meth:`FrankaExecutor._replan_would_speed_up`), at most MAX_DEFERRED_REPLANS
#: control periods in a row.
REPLAN_SPEED_TOLERANCE = 1.02
MAX_DEFERRED_REPLANS = 2
#: After a planner failure the arm counts as at rest when no measured joint moved faster than this over the last
#: ~20 ms of the robot's clock (rad/s, from the measured positions).
REST_JOINT_SPEED_RAD_S = 0.02
#: ``planner_retries`` counts the failures within this window of the executor's clock (s).
PLANNER_RETRY_WINDOW_S = 10.0
#: franky's message for a failed motion plan (its ``RuntimeError``); the code is Ruckig's result.
PLANNER_FAILURE_PREFIX = "Motion planner failed"


class ExecutionRefusedError(RuntimeError):
    """The executor cannot take chunks now (disabled, faulted, not connected); the message says what to do."""


def _finite_vector(name: str, value: Any, n: int, minimum: float = -np.inf) -> None:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or np.any(arr < minimum):
        raise ValueError(f"ExecutorConfig.{name} must be {n} finite numbers >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything the driver needs: where the robot is, rates, and the component configs."""

    robot_host: str = "172.16.0.2"
    """FCI address of the arm (franky-sim: its loopback address, e.g. 127.0.0.2)."""
    control_rate_hz: float = 50.0
    """Rate at which streaming motions are sent (Hz, >= 30 for smooth motion)."""
    state_rate_hz: float = 200.0
    """Rate at which the robot state is read (Hz, >= control_rate_hz)."""
    streaming_mode: str = "joint"
    """``joint`` (checked joint targets as JointWaypointMotions, the safe default) or ``cartesian`` (the same
    checked targets as poses in CartesianWaypointMotions); docs/driver.md compares them."""
    target_lead_periods: float = 6.0
    """``joint`` streaming: each motion goes to the plan's target this many control periods ahead, due then (franky
    plans it to arrive no earlier); ``cartesian`` streaming: one period ahead, as soon as possible. A target one
    period ahead left the joints' planner (at the per-motion acceleration bound) no room to adjust their timing: the
    10 Hz stream stopped and went. At 3 periods it still did, rarely: franky starts each motion a few ms after the
    state it was computed from, and a joint that cannot stop on the way arrives only within a window of durations
    whose top edge was 3-7 ms above the due time; the window's margin grows with the square of the lead
    (docs/driver.md, *The windows' top edge*)."""
    urdf_path: str = ""
    """FR3 URDF for the kinematics ("" = this package's urdf/fr3.urdf, else the one franky-sim ships)."""
    watchdog_timeout_s: float = 0.5
    """Stop the arm when no chunk arrived for this long while executing (s)."""
    reconnect_period_s: float = 1.0
    """Time between reconnection attempts after the connection is lost (s)."""
    state_timeout_s: float = 0.1
    """No fresh robot state (the robot's clock did not advance) for this long: the state is reported stale
    (``connected`` False) at once (s)."""
    link_timeout_s: float = 2.0
    """No fresh robot state for this long: the connection counts as lost (fault, reconnect) even if franky raised
    no NetworkException (a dead franky.Robot keeps returning its last state) (s)."""
    require_enable: bool = True
    """Start with execution disabled (chunks refused until enable(True))."""
    max_future_lead_s: float = 1.0
    """A chunk whose first step is due more than this after now is rejected (s); one due later than the next
    control period but within this lead is held until due."""
    stop_timeout_s: float = 2.0
    """A planned stop (franky's stop motion) not at rest within this long (robot clock) falls back to the hard
    stop (s)."""
    planner_retries: int = 2
    """franky planner failures (``Motion planner failed with error code ...``, e.g. Ruckig's -111 synchronisation
    error, a numerical failure on a valid target) resumed automatically: the executor waits until the measured arm
    is at rest (``REST_JOINT_SPEED_RAD_S``, within ``stop_timeout_s``), then streams the plan again from the measured
    joints. One more within ``PLANNER_RETRY_WINDOW_S`` latches a control fault (0 = every planner failure latches)."""
    collision_torque_thresholds_nm: tuple[float, ...] = DEFAULT_COLLISION_TORQUES_NM
    """Joint torque collision thresholds fr3_joint1..7 (Nm), given to franky's set_collision_behavior."""
    collision_force_thresholds_n: tuple[float, ...] = DEFAULT_COLLISION_FORCES_N
    """Cartesian collision thresholds x, y, z (N) and about x, y, z (Nm)."""
    load_mass_kg: float = 0.0
    """Mass of a payload held by the hand (kg; 0 = none), given to franky's set_load."""
    load_center_of_mass_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Payload centre of mass in the flange frame (m)."""
    load_inertia_kg_m2: tuple[float, ...] = (0.0,) * 9
    """Payload inertia matrix, column-major 3x3 (kg m^2)."""
    timing: TimingConfig = field(default_factory=TimingConfig)
    envelope: SafetyEnvelopeConfig = field(default_factory=SafetyEnvelopeConfig)
    gripper: GripperConfig = field(default_factory=GripperConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.robot_host, str) or not self.robot_host:
            raise ValueError(f"ExecutorConfig.robot_host must be a host name or IP, got {self.robot_host!r}")
        if not (np.isfinite(self.control_rate_hz) and 30.0 <= self.control_rate_hz <= 500.0):
            raise ValueError(f"ExecutorConfig.control_rate_hz must be in [30, 500] Hz, got {self.control_rate_hz!r}")
        if not (np.isfinite(self.state_rate_hz) and self.control_rate_hz <= self.state_rate_hz <= 1000.0):
            raise ValueError(f"ExecutorConfig.state_rate_hz must be in [control_rate_hz, 1000] Hz, "
                             f"got {self.state_rate_hz!r}")
        if self.streaming_mode not in STREAMING_MODES:
            raise ValueError(f"ExecutorConfig.streaming_mode must be one of {STREAMING_MODES}, "
                             f"got {self.streaming_mode!r}")
        if not (isinstance(self.target_lead_periods, (int, float)) and 1.0 <= self.target_lead_periods <= 10.0):
            raise ValueError(f"ExecutorConfig.target_lead_periods must be a number in [1, 10], "
                             f"got {self.target_lead_periods!r}")
        if not (isinstance(self.planner_retries, int) and not isinstance(self.planner_retries, bool)
                and 0 <= self.planner_retries <= 10):
            raise ValueError(f"ExecutorConfig.planner_retries must be an integer in [0, 10], "
                             f"got {self.planner_retries!r}")
        for name in ("watchdog_timeout_s", "reconnect_period_s", "state_timeout_s", "link_timeout_s",
                     "max_future_lead_s", "stop_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0.0):
                raise ValueError(f"ExecutorConfig.{name} must be a number > 0 s, got {value!r}")
        _finite_vector("collision_torque_thresholds_nm", self.collision_torque_thresholds_nm, 7, 0.0)
        _finite_vector("collision_force_thresholds_n", self.collision_force_thresholds_n, 6, 0.0)
        _finite_vector("load_center_of_mass_m", self.load_center_of_mass_m, 3)
        _finite_vector("load_inertia_kg_m2", self.load_inertia_kg_m2, 9)
        if not (isinstance(self.load_mass_kg, (int, float)) and 0.0 <= self.load_mass_kg <= 3.0):
            raise ValueError(f"ExecutorConfig.load_mass_kg must be in [0, 3] kg (the FR3 payload), "
                             f"got {self.load_mass_kg!r}")

    @property
    def control_period_s(self) -> float:
        """Period of the control loop (s), ``1 / control_rate_hz``."""
        return 1.0 / self.control_rate_hz


@dataclass(frozen=True)
class StopReport:
    """How the last stop went (executor clock for times; measured TCP from FK of the measured joints)."""

    kind: str
    """``planned`` (franky's stop motion) or ``hard`` (libfranka's Robot::stop, the last resort)."""
    reason: str
    """Why: ``stop`` (e-stop / disable), ``watchdog``, ``halt: ...``, ``close``."""
    speed_at_stop_m_s: float
    """Measured TCP speed when the stop was sent (m/s, robot clock)."""
    time_to_rest_s: float
    """From sending the stop until franky reported the stop motion finished (s, robot clock)."""
    distance_to_rest_m: float
    """Measured TCP travel from sending the stop until then (m)."""


@dataclass(frozen=True)
class RobotSnapshot:
    """What the executor last read from the robot and its own status (values; safe to hand to other threads)."""

    time_s: float = float("nan")
    """Executor clock time of the reading (s)."""
    robot_time_s: float = float("nan")
    """The robot's own clock at the reading (s since it started; franky-sim: simulated time, whose pace relative
    to the executor clock depends on the machine's load)."""
    joint_positions_rad: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    joint_velocities_rad_s: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    commanded_joint_positions_rad: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    """The robot's last commanded joints q_d (the 1 kHz command stream franky sends), rad."""
    commanded_joint_velocities_rad_s: np.ndarray = field(default_factory=lambda: np.full(7, np.nan))
    """The robot's reported commanded joint velocities dq_d (rad/s): where franky's planner starts a new motion from
    (the last commanded velocity, on a real FR3 and from the sim server; franky-sim's own value, a low-pass about
    20 ms behind, only for a client that fell behind: docs/sim.md)."""
    ee_position_m: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    """fr3_hand_tcp position in fr3_link0 as franky reports it (O_T_EE; franky-sim: from the commanded joints)."""
    ee_quaternion_xyzw: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    measured_tcp_m: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    """TCP position from FK of the measured joints (m): what the envelope's measured checks use."""
    measured_elbow_m: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    measured_wrist_m: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    gripper_width_m: float | None = None
    connected: bool = False
    """Connected and the state is fresh (False when stale or when the loop thread is not running)."""
    stale: bool = False
    """No fresh state reading for ``state_timeout_s``."""
    enabled: bool = False
    executing: bool = False
    """A plan is being followed."""
    stopping: bool = False
    """A planned stop is running."""
    fault: str | None = None
    """Latched fault (None when healthy); cleared by recover()."""
    watchdog_tripped: bool = False
    commands_sent: int = 0
    """Streaming motions sent to franky so far."""
    state_samples: int = 0
    """Robot states read so far."""
    last_stop: StopReport | None = None


@dataclass
class _Request:
    kind: str
    payload: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def _default_robot_factory(host: str):
    import franky

    return franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)


def _default_gripper_factory(host: str):
    import franky

    return franky.Gripper(host)


def _call_with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Run ``fn`` in a helper thread; raise TimeoutError if it does not return within ``timeout_s``.

    The helper is left to finish on its own: used for connects that can block forever.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"connect-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not answer within {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class FrankaExecutor:
    """Executes action chunks on one arm; a context manager (start/close)."""

    def __init__(self, config: ExecutorConfig, clock: Callable[[], float] = time.monotonic,
                 robot_factory: Callable[[str], object] = _default_robot_factory,
                 gripper_factory: Callable[[str], object] = _default_gripper_factory) -> None:
        self.config = config
        self._clock = clock
        self._robot_factory = robot_factory
        self._gripper_factory = gripper_factory
        self.interventions = InterventionCounter()
        self.envelope = SafetyEnvelope(config.envelope, self.interventions)
        self.kinematics = FR3Kinematics(config.urdf_path or None)
        self.guard = JointSpaceGuard(config.envelope, self.kinematics, self.interventions)
        self.gate = CommandGate(self.envelope, self.guard, config.streaming_mode)
        self._blender = SeamBlender(config.timing)
        self.watchdog = Watchdog(config.watchdog_timeout_s, clock)
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._robot = None
        self._gripper: GripperCommander | None = None
        self._enabled = not config.require_enable
        self._fault: str | None = None
        self._snapshot = RobotSnapshot()
        self._closing = threading.Event()
        self._connected_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._commands_sent = 0
        self._state_samples = 0
        self._last_connect_attempt_s = -np.inf
        self._pending: ActionChunk | None = None
        self._latest_stamp_s = -np.inf
        self._stop: dict[str, Any] | None = None
        self._last_stop: StopReport | None = None
        self._halt_baseline: dict[str, np.ndarray | float] | None = None
        self._previous_snap: RobotSnapshot | None = None
        self._last_command_robot_time_s: float | None = None
        self._last_sent_joints: np.ndarray | None = None
        self._deferred_replans = 0
        self._last_fresh_s = -np.inf
        self._tcp_history: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        """(robot time, measured TCP, measured joints) over the last ~20 ms of the robot's clock."""
        self._state_listeners: list[Callable[[RobotSnapshot], None]] = []
        self._listener_errors_logged = 0
        self.first_command_latency_s: float | None = None
        """Executor clock time from accepting the first chunk to sending its first motion (s), for benchmarks."""
        self.stop_handled_at_sample: int | None = None
        """``state_samples`` count when the loop carried out the last stop (tests count periods, not seconds)."""
        self._chunk_arrival_s: float | None = None
        self._planner_failures: deque[float] = deque()
        self._last_sent_motion: tuple | None = None
        self._planner_resume: dict[str, Any] | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> "FrankaExecutor":
        """Start the loop thread (connects to the robot and streams the plan); idempotent, returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_guarded, name="franka-executor", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the arm (planned stop, hard stop if that fails), end the loop thread, release robot and gripper."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> "FrankaExecutor":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the robot is connected (True) or ``timeout_s`` passed (False)."""
        return self._connected_event.wait(timeout_s)

    def add_state_listener(self, callback: Callable[[RobotSnapshot], None]) -> None:
        """Call ``callback(snapshot)`` from the loop thread after every state reading.

        Keep it short; an exception in it is logged and counted as ``listener_errors``, it never stops the loop.
        """
        self._state_listeners.append(callback)

    def remove_state_listener(self, callback: Callable[[RobotSnapshot], None]) -> None:
        """Stop calling ``callback``."""
        self._state_listeners.remove(callback)

    @property
    def loop_alive(self) -> bool:
        """Whether the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- commands (queued, answered by the loop) --------------------------------------------------------------------
    def _submit(self, kind: str, payload: Any = None, timeout_s: float = 2.0) -> Any:
        if not self.loop_alive:
            self.interventions.add("refused_disconnected")
            raise ExecutionRefusedError("the executor loop is not running (start() it, or it ended: see the log)")
        request = _Request(kind, payload)
        self._queue.put(request)
        if not request.done.wait(timeout_s):
            raise ExecutionRefusedError(f"{kind} not answered by the executor loop within {timeout_s} s")
        if request.error is not None:
            raise request.error
        return request.result

    def execute(self, chunk: ActionChunk) -> ActionChunk | None:
        """Blend ``chunk`` into the plan.

        Returns:
            The new plan; None when the whole chunk was already past due; the pending chunk when it starts later and
            is held until due.

        Raises:
            ExecutionRefusedError: execution is disabled, faulted or disconnected.
            ChunkRejectedError: the chunk is rejected (jump, stale stamp, too far in the future, mode change); the
                plan then continues.
        """
        if not isinstance(chunk, ActionChunk):
            raise TypeError(f"execute() takes an ActionChunk, got {type(chunk).__name__}")
        return self._submit("chunk", (chunk, self._clock()))

    def stop(self, timeout_s: float = 10.0, wait: bool = True) -> bool:
        """E-stop: disable execution, drop the plan and start franky's planned stop on the next loop tick.

        With ``wait`` (default) it returns once the arm is at rest (the planned stop finished, or the hard stop
        fell in): True, or False if that did not happen within ``timeout_s`` (executor-side wall time; franky-sim
        may run slower than real time). Without ``wait`` it returns once the stop was sent. The stop report (time
        and distance to rest) is ``state.last_stop`` / :meth:`wait_stopped`.
        """
        with self._lock:
            self._enabled = False
        if not self.loop_alive:
            return not self._connected_event.is_set()
        deadline = time.monotonic() + timeout_s
        try:
            self._submit("stop", None, timeout_s)
        except ExecutionRefusedError:
            return False
        if not wait:
            return True
        while self._stop is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def wait_stopped(self, timeout_s: float) -> StopReport | None:
        """Block until no stop is running (call after :meth:`stop`, which returns once the stop was sent).

        Returns:
            The last stop's report; None if the stop did not end within ``timeout_s`` (s) or there never was one.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._stop is None:
                return self._last_stop
            time.sleep(0.005)
        return None

    def enable(self, flag: bool) -> None:
        """Allow (True) or forbid (False, also stops the arm) execution of chunks."""
        if not flag:
            self.stop()
            return
        with self._lock:
            self._enabled = True

    def recover(self, timeout_s: float = 5.0) -> None:
        """Clear a latched fault: franky ``recover_from_errors`` on the connected robot.

        Raises:
            ExecutionRefusedError: the robot is not connected (yet) or recovery failed.
        """
        self._submit("recover", None, timeout_s)

    # -- read-only state --------------------------------------------------------------------------------------------
    @property
    def state(self) -> RobotSnapshot:
        """The latest reading and status.

        ``connected`` is False when the reading is older than ``state_timeout_s`` (``stale``) or the loop thread is
        not running.
        """
        with self._lock:
            snap = replace(self._snapshot, fault=self._fault, enabled=self._enabled)
        if self._thread is not None and not self._thread.is_alive():
            return replace(snap, connected=False, executing=False,
                           fault=snap.fault or "internal: the executor loop ended")
        if snap.connected and self._clock() - self._last_fresh_s > self.config.state_timeout_s:
            return replace(snap, connected=False, stale=True)
        return snap

    @property
    def plan(self) -> ActionChunk | None:
        """The plan being executed (the blended chunks still due), None when idle."""
        with self._lock:
            return self._blender.plan

    def diagnostics(self) -> dict[str, str]:
        """Key/value health report: connection, fault, watchdog, last stop, every intervention counter."""
        snap = self.state
        values = {
            "robot_host": self.config.robot_host,
            "streaming_mode": self.config.streaming_mode,
            "connected": str(snap.connected),
            "stale": str(snap.stale),
            "enabled": str(snap.enabled),
            "executing": str(snap.executing),
            "fault": snap.fault or "",
            "watchdog_tripped": str(snap.watchdog_tripped),
            "watchdog_trips": str(self.watchdog.trips),
            "commands_sent": str(snap.commands_sent),
        }
        if snap.last_stop is not None:
            s = snap.last_stop
            values.update({"last_stop.kind": s.kind, "last_stop.reason": s.reason,
                           "last_stop.speed_at_stop_m_s": f"{s.speed_at_stop_m_s:.4f}",
                           "last_stop.time_to_rest_s": f"{s.time_to_rest_s:.4f}",
                           "last_stop.distance_to_rest_m": f"{s.distance_to_rest_m:.4f}"})
        values.update({f"interventions.{k}": str(v) for k, v in sorted(self.interventions.snapshot().items())})
        return values

    # -- loop: requests ---------------------------------------------------------------------------------------------
    def _handle_chunk(self, chunk: ActionChunk, arrival_s: float, now: float) -> ActionChunk | None:
        c = self.config
        with self._lock:
            fault, enabled = self._fault, self._enabled
        if fault is not None:
            self.interventions.add("refused_faulted")
            raise ExecutionRefusedError(f"faulted ({fault}): call recover() first")
        if self._robot is None or not self._connected_event.is_set():
            self.interventions.add("refused_disconnected")
            raise ExecutionRefusedError(f"not connected to the robot at {c.robot_host}")
        if not enabled:
            self.interventions.add("refused_disabled")
            raise ExecutionRefusedError("execution is disabled: call enable(True) (the ~/enable service) first")
        try:
            if chunk.start_time_s > now + c.max_future_lead_s:
                self.interventions.add("rejected_future")
                raise ChunkRejectedError(f"chunk starts {chunk.start_time_s - now:.3f} s in the future, more than "
                                         f"max_future_lead_s {c.max_future_lead_s} s (clock or stamp wrong?)")
            if chunk.start_time_s < self._latest_stamp_s - 1e-9:
                self.interventions.add("rejected_stale_stamp")
                raise ChunkRejectedError(f"chunk stamped {self._latest_stamp_s - chunk.start_time_s:.3f} s older "
                                         f"than the newest accepted one (out of order, or a second source)")
            self._check_jump(chunk, now)
            if chunk.start_time_s > now + c.control_period_s:
                plan = self._blender.plan
                if plan is not None and plan.is_cartesian != chunk.is_cartesian:
                    raise ChunkRejectedError("a chunk cannot switch between Cartesian and joint targets while a "
                                             "plan of the other kind runs: stop first")
                self._pending = chunk
                self._latest_stamp_s = chunk.start_time_s
                self.interventions.add("held_until_due")
                self.watchdog.feed()
                return chunk
            with self._lock:
                plan = self._blender.add(chunk, now)
        except ChunkRejectedError:
            self.interventions.add("rejected_chunks")
            raise
        self._latest_stamp_s = chunk.start_time_s
        if plan is None:
            self.interventions.add("dropped_past_due_chunks")
            return None
        dropped = chunk.n_steps - sum(1 for t in chunk.times_s if t >= now + c.timing.lookahead_s - 1e-9)
        if dropped:
            self.interventions.add("dropped_past_due_steps", dropped)
        self._pending = None
        self.watchdog.feed()
        if self._chunk_arrival_s is None:
            self._chunk_arrival_s = arrival_s
        return plan

    def _check_jump(self, chunk: ActionChunk, now: float) -> None:
        """Reject a chunk whose due steps jump, or whose first due step is far from the arm and the plan.

        Far means from both the measured arm and the plan's current target, so a chunk re-anchored at a lagging arm
        is accepted.
        """
        c = self.config.envelope
        due = [i for i, t in enumerate(chunk.times_s) if t >= now - 1e-9]
        first = due[0] if due else chunk.n_steps - 1
        tail = chunk if first == 0 else chunk.tail(first)
        self.envelope.check_chunk(tail)  # consecutive due steps
        snap = self._snapshot
        plan = self._blender.plan
        refs: list[tuple[np.ndarray, np.ndarray | None]] = []
        if chunk.is_cartesian:
            if np.all(np.isfinite(snap.measured_tcp_m)):
                q = snap.joint_positions_rad
                refs.append(self.kinematics.forward(q))
            if plan is not None and plan.is_cartesian:
                t = sample(plan, now)
                refs.append((t.position_m, t.quaternion_xyzw))
            for p, quat in refs:
                d = float(np.linalg.norm(tail.positions_m[0] - p))
                angle = 2.0 * float(np.arccos(min(1.0, abs(float(np.dot(tail.quaternions_xyzw[0], quat))))))
                if d <= c.max_target_jump_m and angle <= c.max_target_jump_rad:
                    return
            if refs:
                self.interventions.add("rejected_jump")
                d = min(float(np.linalg.norm(tail.positions_m[0] - p)) for p, _ in refs)
                raise ChunkRejectedError(f"jump: the first due target is {d:.3f} m (or its orientation more than "
                                         f"{c.max_target_jump_rad} rad) from both the measured TCP and the plan, "
                                         f"max_target_jump_m is {c.max_target_jump_m} m")
        else:
            joint_refs = []
            if np.all(np.isfinite(snap.joint_positions_rad)):
                joint_refs.append(snap.joint_positions_rad)
            if plan is not None and not plan.is_cartesian:
                joint_refs.append(sample(plan, now).joint_positions_rad)
            for q in joint_refs:
                if float(np.abs(tail.joint_positions_rad[0] - q).max()) <= c.max_target_jump_rad:
                    return
            if joint_refs:
                self.interventions.add("rejected_jump")
                d = min(float(np.abs(tail.joint_positions_rad[0] - q).max()) for q in joint_refs)
                raise ChunkRejectedError(f"jump: the first due joint target differs by {d:.3f} rad from both the "
                                         f"measured joints and the plan, max_target_jump_rad is "
                                         f"{c.max_target_jump_rad} rad")

    def _handle_recover(self) -> None:
        if self._robot is None:
            raise ExecutionRefusedError(f"robot {self.config.robot_host} not connected; it is retried every "
                                        f"{self.config.reconnect_period_s} s, call recover() again once it is up")
        try:
            self._robot.recover_from_errors()
        except Exception as exc:
            raise ExecutionRefusedError(f"recovery failed: {type(exc).__name__}: {exc}") from exc
        snap = self._snapshot
        self.gate.reset_to(snap.joint_positions_rad)
        self._halt_baseline = self._measured_excess(snap)
        with self._lock:
            self._fault = None
            self._blender.reset()
        self._pending = None
        self._latest_stamp_s = -np.inf
        self._planner_resume = None
        logger.info("recovered")

    def _drain_requests(self, now: float) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                if request.kind == "chunk":
                    request.result = self._handle_chunk(*request.payload, now)
                elif request.kind == "stop":
                    self.stop_handled_at_sample = self._state_samples
                    self._begin_stop("stop", now)
                elif request.kind == "recover":
                    self._handle_recover()
                else:
                    raise ValueError(f"unknown executor request {request.kind!r}")
            except (ChunkRejectedError, ExecutionRefusedError) as exc:
                request.error = exc
            except BaseException as exc:
                request.error = exc
                raise
            finally:
                request.done.set()

    # -- loop: robot ------------------------------------------------------------------------------------------------
    def _configure_robot(self, robot) -> None:
        """Franky's own limits from the envelope, collision behaviour and load from the config."""
        import franky

        c, e = self.config, self.config.envelope

        def set_limit(name: str, value) -> None:
            limit = getattr(robot, name)
            limit.set(np.minimum(np.asarray(value, dtype=np.float64), np.asarray(limit.max)).tolist()
                      if np.ndim(value) else min(float(value), float(limit.max)))

        set_limit("translation_velocity_limit", e.max_speed_m_s)
        set_limit("translation_acceleration_limit", e.max_acceleration_m_s2)
        set_limit("translation_jerk_limit", e.max_jerk_m_s3)
        set_limit("rotation_velocity_limit", e.max_rotation_speed_rad_s)
        set_limit("rotation_acceleration_limit", e.max_rotation_acceleration_rad_s2)
        set_limit("rotation_jerk_limit", e.max_rotation_jerk_rad_s3)
        set_limit("joint_velocity_limit", np.full(7, e.max_joint_speed_rad_s))
        set_limit("joint_acceleration_limit", np.full(7, e.max_joint_acceleration_rad_s2))
        set_limit("joint_jerk_limit", np.full(7, e.max_joint_jerk_rad_s3))
        self.gate.planner_joint_velocity_limit_rad_s = np.asarray(robot.joint_velocity_limit.get(), dtype=np.float64)
        self.gate.planner_joint_acceleration_limit_rad_s2 = np.asarray(robot.joint_acceleration_limit.get(),
                                                                       dtype=np.float64)
        self.gate.planner_joint_jerk_limit_rad_s3 = np.asarray(robot.joint_jerk_limit.get(), dtype=np.float64)
        d = e.relative_dynamics_factor
        robot.relative_dynamics_factor = franky.RelativeDynamicsFactor(d, d, d)
        robot.set_collision_behavior(list(c.collision_torque_thresholds_nm), list(c.collision_force_thresholds_n))
        if c.load_mass_kg > 0.0:
            robot.set_load(c.load_mass_kg, list(c.load_center_of_mass_m), list(c.load_inertia_kg_m2))

    def _connect(self) -> None:
        import franky

        now = self._clock()
        if now - self._last_connect_attempt_s < self.config.reconnect_period_s:
            return
        self._last_connect_attempt_s = now
        try:
            robot = self._robot_factory(self.config.robot_host)
            self._configure_robot(robot)
            state = robot.state
        except (franky.Exception, RuntimeError, OSError) as exc:
            logger.info("robot %s not reachable: %s", self.config.robot_host, exc)
            return
        gripper = None
        if self.config.gripper.enabled:
            try:
                raw = _call_with_timeout(lambda: self._gripper_factory(self.config.robot_host), 5.0, "gripper")
                gripper = GripperCommander(raw, self.config.gripper, self.envelope, self._clock)
            except (franky.Exception, RuntimeError, OSError, TimeoutError) as exc:
                logger.warning("gripper at %s not reachable (%s): continuing without it", self.config.robot_host, exc)
        self.gate.reset_to(np.array(state.q))
        self._halt_baseline = None  # set from the first reading: an arm switched on outside is not a fault
        self._robot, self._gripper = robot, gripper
        self._connected_event.set()
        logger.info("connected to robot %s (%s streaming)", self.config.robot_host, self.config.streaming_mode)

    def _release(self) -> None:
        """Drop robot and gripper (franky closes their connections when the objects go)."""
        if self._gripper is not None:
            self._gripper.release()
        self._robot = None
        self._gripper = None
        self._connected_event.clear()

    def _set_fault(self, reason: str) -> None:
        with self._lock:
            new = self._fault is None
            if new:
                self._fault = reason
            self._blender.reset()
            self.watchdog.disarm()
        self._pending = None
        if new:
            logger.error("franka executor fault: %s", reason)

    def _read_state(self, now: float) -> RobotSnapshot:
        st = self._robot.state
        robot_time = st.time.to_sec()
        if not robot_time == self._snapshot.robot_time_s or not self._snapshot.connected:
            self._last_fresh_s = now
        elif now - self._last_fresh_s > self.config.link_timeout_s:
            import franky

            raise franky.NetworkException(f"no fresh robot state for {now - self._last_fresh_s:.2f} s "
                                          f"(link_timeout_s {self.config.link_timeout_s})")
        affine = st.O_T_EE
        q = np.array(st.q)
        points = self.kinematics.check_points(q)
        width = None
        if self._gripper is not None:
            try:
                width = self._gripper.width_m
            except Exception as exc:  # the hand is optional: never fail the arm for it
                logger.debug("gripper width unreadable: %s", exc)
        self._state_samples += 1
        with self._lock:
            snap = RobotSnapshot(
                time_s=now, robot_time_s=robot_time, joint_positions_rad=q, joint_velocities_rad_s=np.array(st.dq),
                commanded_joint_positions_rad=np.array(st.q_d), commanded_joint_velocities_rad_s=np.array(st.dq_d),
                ee_position_m=np.array(affine.translation), ee_quaternion_xyzw=np.array(affine.quaternion),
                measured_tcp_m=points["tcp"], measured_elbow_m=points["elbow"], measured_wrist_m=points["wrist"],
                gripper_width_m=width, connected=True, enabled=self._enabled,
                executing=self._blender.plan is not None, stopping=self._stop is not None, fault=self._fault,
                watchdog_tripped=self.watchdog.tripped, commands_sent=self._commands_sent,
                state_samples=self._state_samples, last_stop=self._last_stop)
            self._snapshot = snap
        return snap

    # -- loop: stops ------------------------------------------------------------------------------------------------
    def _speed_m_s(self, snap: RobotSnapshot) -> float:
        """Measured TCP speed over the last ~20 ms of the robot's clock (m/s)."""
        history = self._tcp_history
        if not history or not snap.robot_time_s > history[0][0]:
            return 0.0
        t0, p0, _ = history[0]
        return float(np.linalg.norm(snap.measured_tcp_m - p0) / (snap.robot_time_s - t0))

    def _joint_speed_rad_s(self, snap: RobotSnapshot) -> float:
        """Fastest measured joint over the last ~20 ms of the robot's clock, from positions (rad/s; inf if unknown).

        From the measured positions, not the reported velocities: franky-sim keeps reporting the last velocity of a
        motion that ended (an idle arm at rest read 0.077 rad/s for seconds).
        """
        history = self._tcp_history
        if not history or not snap.robot_time_s - history[0][0] >= 0.015:
            return float("inf")
        t0, _, q0 = history[0]
        return float(np.max(np.abs(snap.joint_positions_rad - q0)) / (snap.robot_time_s - t0))

    def _begin_stop(self, reason: str, now: float) -> None:
        """Drop the plan and send franky's planned stop (a hard stop if even sending it fails)."""
        self._planner_resume = None
        with self._lock:
            self._blender.reset()
            self.watchdog.disarm()
        self._pending = None
        self._chunk_arrival_s = None
        robot = self._robot
        if robot is None or self._stop is not None:
            return  # nothing to stop, or a stop is already running (not restarted: it would preempt it)
        if reason in ("stop", "close") and not robot.is_in_control:
            return  # no motion running: sending a stop motion would only start one
        snap = self._snapshot
        info = {"reason": reason, "t0": snap.robot_time_s, "p0": snap.measured_tcp_m.copy(),
                "speed": self._speed_m_s(snap), "kind": "planned"}
        try:
            robot.move(self.gate.stop_motion(), asynchronous=True)
        except Exception as exc:  # the planned stop could not even start: last resort
            logger.warning("planned stop failed (%s: %s): hard stop", type(exc).__name__, exc)
            self._hard_stop()
            info["kind"] = "hard"
        self._stop = info
        if self._gripper is not None:
            try:
                self._gripper.stop()
            except Exception as exc:
                logger.warning("gripper stop failed: %s", exc)

    def _hard_stop(self) -> None:
        import franky

        self.interventions.add("hard_stops")
        robot = self._robot
        robot.stop()
        try:
            robot.join_motion(timeout=0.5)
        except franky.ControlException:
            pass  # "Move command preempted": the stop itself

    def _progress_stop(self, now: float, snap: RobotSnapshot) -> None:
        import franky

        info = self._stop
        if info is None:
            return
        finished = False
        try:
            finished = bool(self._robot.join_motion(timeout=0.0))
        except franky.ControlException as exc:  # the stop motion itself failed
            logger.warning("planned stop ended with %s: hard stop", exc)
            self._hard_stop()
            info["kind"], finished = "hard", True
        elapsed = snap.robot_time_s - info["t0"]  # the robot's clock: a slowed-down simulator is not a slow stop
        if not finished and elapsed > self.config.stop_timeout_s:
            logger.warning("planned stop not at rest after %.2f s: hard stop", elapsed)
            self._hard_stop()
            info["kind"], finished = "hard", True
        if finished:
            report = StopReport(info["kind"], info["reason"], info["speed"], snap.robot_time_s - info["t0"],
                                float(np.linalg.norm(snap.measured_tcp_m - info["p0"])))
            self._stop = None
            self._last_stop = report
            self.gate.reset_to(snap.joint_positions_rad)
            self._last_command_robot_time_s = None
            self._last_sent_joints = None
            self.interventions.add(f"stops_{report.kind}")
            logger.info("stopped (%s, %s): %.3f s, %.4f m from %.3f m/s", report.kind, report.reason,
                        report.time_to_rest_s, report.distance_to_rest_m, report.speed_at_stop_m_s)

    # -- loop: measured-state checks --------------------------------------------------------------------------------
    def _measured_excess(self, snap: RobotSnapshot) -> dict[str, Any]:
        """How far the measured arm is past the halt thresholds (0 = fine): per joint (rad) and per point (m)."""
        c = self.config.envelope
        lo = self.guard.hard_lower_rad + c.joint_halt_margin_rad
        hi = self.guard.hard_upper_rad - c.joint_halt_margin_rad
        q = snap.joint_positions_rad
        return {"joints": np.maximum(lo - q, 0.0) + np.maximum(q - hi, 0.0),
                "tcp": max(0.0, box_excess_m(snap.measured_tcp_m, c.lower_m, c.upper_m) - c.measured_box_tolerance_m),
                "elbow": max(0.0, box_excess_m(snap.measured_elbow_m, c.arm_lower_m, c.arm_upper_m)
                             - c.measured_box_tolerance_m),
                "wrist": max(0.0, box_excess_m(snap.measured_wrist_m, c.arm_lower_m, c.arm_upper_m)
                             - c.measured_box_tolerance_m)}

    def _check_measured(self, now: float, snap: RobotSnapshot) -> None:
        """Halt with a fault when the measured arm passes a halt threshold further than at the last recovery.

        After a recovery (or at connect) the arm may move back in; only getting worse than then halts again, and
        once a joint / point is back inside its threshold, any excess there halts. (Tightening to the best value seen
        instead halted an arm held past a limit on franky-sim: it dipped 5-8 mrad inwards and came back, because
        franky-sim reports a stale velocity to a new client.)
        """
        if self._fault is not None:
            return  # already faulted (and stopped if it was a halt)
        excess = self._measured_excess(snap)
        if self._halt_baseline is None:
            self._halt_baseline = excess
            return
        base = self._halt_baseline
        worse = []
        joints_base = base.get("joints", np.zeros(7))
        for i in np.flatnonzero(excess["joints"] > joints_base + 1e-3):
            worse.append(f"joint {i + 1} at {snap.joint_positions_rad[i]:.4f} rad")
        for name in ("tcp", "elbow", "wrist"):
            if excess[name] > base.get(name, 0.0) + 1e-3:
                worse.append(f"{name} {excess[name] * 1e3:.1f} mm beyond its box + tolerance")
        if not worse:  # a part that came fully back inside its threshold: from now on any excess there halts
            points = {k: 0.0 if excess[k] <= 0.0 else base.get(k, 0.0) for k in ("tcp", "elbow", "wrist")}
            self._halt_baseline = {"joints": np.where(excess["joints"] <= 0.0, 0.0, joints_base), **points}
        if worse:
            self.interventions.add("halted_measured")
            reason = "halted: measured " + "; ".join(worse)
            self._set_fault(reason)
            if self._stop is None:
                self._begin_stop(reason, now)

    # -- loop: streaming --------------------------------------------------------------------------------------------
    def _limits_period_s(self, snap: RobotSnapshot) -> float:
        """Robot-clock time since the last command (s), within [1 ms, 2 control periods].

        It is the period the per-command limits are computed for, so speed and acceleration are bounded per unit of
        the *robot's* time even when it runs slower than the executor's clock (franky-sim under load).
        """
        nominal = self.config.control_period_s
        last = self._last_command_robot_time_s
        self._last_command_robot_time_s = snap.robot_time_s
        if last is None or not math.isfinite(snap.robot_time_s - last):
            return nominal
        return min(max(snap.robot_time_s - last, 1e-3), 2.0 * nominal)

    def _command(self, now: float, snap: RobotSnapshot) -> None:
        period = self.config.control_period_s
        with self._lock:
            enabled = self._enabled and self._fault is None
        if not enabled or self._stop is not None:
            return
        pending = self._pending
        if pending is not None and pending.start_time_s <= now + period:
            self._pending = None
            with self._lock:
                self._blender.add(pending, now)
            if self._chunk_arrival_s is None:
                self._chunk_arrival_s = now
        with self._lock:
            plan = self._blender.plan
        if plan is None:
            return
        last = self._last_command_robot_time_s
        if last is not None and snap.robot_time_s - last < 0.5 * period:
            # The robot's clock (franky-sim under load) has not advanced by half a period since the last command:
            # preempting franky's planner again now would only restart it; wait for the robot.
            return
        if self.watchdog.check():
            self.interventions.add("watchdog_stops")
            logger.warning("no chunk for %.3f s (watchdog_timeout_s %.3f): stopping", self.watchdog.age_s or -1.0,
                           self.config.watchdog_timeout_s)
            self._begin_stop("watchdog", now)
            return
        if not self._resume_after_planner_failure(snap):
            return
        if self._replan_would_speed_up(snap):
            return
        joint_streaming = self.config.streaming_mode == "joint"
        lead = self.config.target_lead_periods * period if joint_streaming else period
        target = sample(plan, now + lead)
        ahead = sample(plan, now + lead + period)
        at_end = now + lead >= plan.end_time_s
        limits_period = self._limits_period_s(snap)
        arrival = lead if joint_streaming else None
        if plan.is_cartesian:
            velocity = np.zeros(3) if at_end else (ahead.position_m - target.position_m) / period
            motion, _ = self.gate.pose_motion(target.position_m, target.quaternion_xyzw, limits_period, velocity,
                                              snap.commanded_joint_positions_rad, snap.commanded_joint_velocities_rad_s,
                                              arrival)
        else:
            velocity = np.zeros(7) if at_end else (ahead.joint_positions_rad - target.joint_positions_rad) / period
            motion, _ = self.gate.joint_motion(target.joint_positions_rad, limits_period, velocity,
                                               snap.commanded_joint_positions_rad,
                                               snap.commanded_joint_velocities_rad_s, arrival)
        last_sent = self._last_sent_joints
        running = self._last_sent_motion
        same = last_sent is not None and np.array_equal(last_sent, self.gate.last.joint_positions_rad) and \
            not np.any(self.gate.last.joint_velocities_rad_s) and \
            (running is None or not np.any(running[1]))
        self._last_sent_joints = self.gate.last.joint_positions_rad
        if same and self._robot.is_in_control:
            # Holding: the running motion already holds this target at rest. Re-sending it would preempt franky's
            # planner for nothing (with franky-sim's own finite-difference velocity, each preemption made the arm
            # drift). A running motion that arrives with a feed-forward velocity is replaced once by the target at
            # rest: left alone it would arrive moving and brake to rest at franky's full limits (its second
            # waypoint), 3 x the TCP acceleration bound at a wall the stream ran into (issue 9, session 16).
            return
        self._robot.move(motion, asynchronous=True)
        self._last_sent_motion = (self.gate.last.joint_positions_rad, self.gate.last_target_velocity_rad_s,
                                  self.gate.last_speed_factor, snap.commanded_joint_positions_rad,
                                  snap.commanded_joint_velocities_rad_s)
        self._commands_sent += 1
        if self._chunk_arrival_s is not None:
            self.first_command_latency_s = self._clock() - self._chunk_arrival_s
            self._chunk_arrival_s = None
        if target.gripper_width_m is not None and self._gripper is not None:
            try:
                self._gripper.command(target.gripper_width_m)
            except ChunkRejectedError:
                raise
            except Exception as exc:  # the hand is optional: never fault the arm for it
                logger.warning("gripper command failed: %s", exc)

    def _replan_would_speed_up(self, snap: RobotSnapshot) -> bool:
        """Whether to let the running joint motion go on instead of preempting it this period (counted).

        franky restarts a preempting motion from the velocity the robot reports. When that is above the running
        motion's own velocity limit, a re-plan would step the commanded velocity up to it. With franky-sim's own
        report (a low-pass of finite differences that jumped above the commanded velocity when its packets arrived
        unevenly under load) this ratcheted joints from 0.30 to 0.44 rad/s under a 0.30 rad/s limit (TCP 1.2 x
        ``max_speed_m_s``). The sim server now reports the last commanded velocity (franky-sim's own only for a
        client that fell behind, docs/sim.md), where this rarely fires; it stays as a guard. The running motion
        brakes to its limit at franky's full acceleration instead. At most ``MAX_DEFERRED_REPLANS`` periods in a row.
        """
        if self.config.streaming_mode != "joint" or self._deferred_replans >= MAX_DEFERRED_REPLANS:
            self._deferred_replans = 0
            return False
        velocity = snap.commanded_joint_velocities_rad_s
        limit = (self.gate.last_speed_factor * self.config.envelope.relative_dynamics_factor
                 * self.gate.planner_joint_velocity_limit_rad_s)
        if self._last_sent_joints is None or not np.all(np.isfinite(velocity)) or \
                not np.any(np.abs(velocity) > REPLAN_SPEED_TOLERANCE * limit) or not self._robot.is_in_control:
            self._deferred_replans = 0
            return False
        self._deferred_replans += 1
        self.interventions.add("deferred_replans")
        return True

    def _notify(self, snap: RobotSnapshot) -> None:
        for listener in list(self._state_listeners):
            try:
                listener(snap)
            except Exception as exc:
                self.interventions.add("listener_errors")
                if self._listener_errors_logged < 10:
                    self._listener_errors_logged += 1
                    logger.warning("state listener %r raised %s: %s", listener, type(exc).__name__, exc)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            logger.critical("franka executor loop ended: %s: %s", type(exc).__name__, exc, exc_info=True)
            with self._lock:
                self._fault = self._fault or f"internal: executor loop ended: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._shutdown_robot()
            while True:  # answer whatever is still queued
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                request.error = ExecutionRefusedError("the executor is closed")
                request.done.set()

    def _shutdown_robot(self) -> None:
        if self._robot is not None:
            try:
                self._begin_stop("close", self._clock())
                deadline = time.monotonic() + self.config.stop_timeout_s
                while self._stop is not None and time.monotonic() < deadline:
                    if self._robot.join_motion(timeout=0.05):
                        break
                self._stop = None
            except Exception as exc:
                logger.warning("stop on close failed: %s", exc)
        self._release()

    def _run(self) -> None:
        import franky

        tick = 1.0 / self.config.state_rate_hz
        next_command = self._clock()
        while not self._closing.is_set():
            t_tick = time.monotonic()
            now = self._clock()
            if self._robot is None:
                self._connect()
                if self._robot is None:
                    self._fail_requests()
                    time.sleep(min(0.05, self.config.reconnect_period_s))
                    continue
            try:
                snap = self._read_state(now)
                if self._stop is not None:
                    self._progress_stop(now, snap)
                self._check_measured(now, snap)
                self._drain_requests(now)
                if now >= next_command:
                    next_command = max(next_command + self.config.control_period_s, now)
                    self._command(now, snap)
                self._previous_snap = snap
                self._tcp_history.append((snap.robot_time_s, snap.measured_tcp_m, snap.joint_positions_rad))
                while len(self._tcp_history) > 1 and snap.robot_time_s - self._tcp_history[1][0] >= 0.02:
                    self._tcp_history.popleft()
            except franky.NetworkException as exc:
                self._link_lost(exc)
                continue
            except (franky.Exception, RuntimeError) as exc:  # reflexes, planner errors: the link is fine...
                try:
                    self._robot.state  # ...unless reading the state fails too (a dead Robot raises RuntimeError)
                except (franky.Exception, RuntimeError) as probe_exc:
                    self._link_lost(probe_exc)
                    continue
                if not self._planner_failed(exc, now):
                    self._set_fault(f"control error: {type(exc).__name__}: {exc}")
                self.gate.reset_to(self._snapshot.joint_positions_rad)
                continue
            except Exception as exc:  # a bug or a surprise: latch, stop the arm, keep the loop
                logger.exception("internal error in the executor loop")
                self._set_fault(f"internal: {type(exc).__name__}: {exc}")
                try:
                    if self._stop is None:
                        self._begin_stop("internal error", now)
                except Exception as stop_exc:
                    logger.error("could not stop after an internal error: %s", stop_exc)
                continue
            self._notify(snap)
            time.sleep(max(0.0, tick - (time.monotonic() - t_tick)))

    def _planner_failed(self, exc: BaseException, now: float) -> bool:
        """A franky planner failure while streaming: arrange the automatic resume and say so (False: latch it).

        franky's planner (Ruckig) fails now and then on a valid target (-111, its synchronisation: 84 times in the logs
        of 6129 benchmark episodes on franky-sim). franky then ends its control loop and the robot goes idle;
        nothing was commanded outside the envelope. Resuming waits for the arm to come to rest (:meth:`_command`).
        """
        message = str(exc)
        if not message.startswith(PLANNER_FAILURE_PREFIX) or self._stop is not None or self._fault is not None:
            return False
        failures = self._planner_failures
        failures.append(now)
        while failures and now - failures[0] > PLANNER_RETRY_WINDOW_S:
            failures.popleft()
        sent = self._last_sent_motion
        detail = ""
        if sent is not None:
            text = [np.array2string(np.asarray(v), precision=5, max_line_width=400) for v in sent]
            detail = (f"; the last motion sent: target {text[0]} rad, target velocity {text[1]} rad/s, speed factor "
                      f"{sent[2]:.3f}, from the robot's q_d {text[3]} rad, dq_d {text[4]} rad/s")
        logger.warning("%s (%d in %.0f s, planner_retries %d)%s", message, len(failures), PLANNER_RETRY_WINDOW_S,
                       self.config.planner_retries, detail)
        if len(failures) > self.config.planner_retries:
            return False
        self.interventions.add("planner_retries")
        self._planner_resume = {"t0": self._snapshot.robot_time_s, "message": message}
        self._last_command_robot_time_s = None
        self._last_sent_joints = None
        return True

    def _resume_after_planner_failure(self, snap: RobotSnapshot) -> bool:
        """Whether streaming may go on after a planner failure: the arm is at rest (then re-seeded), or not yet."""
        info = self._planner_resume
        if info is None:
            return True
        if self._joint_speed_rad_s(snap) > REST_JOINT_SPEED_RAD_S:
            if snap.robot_time_s - info["t0"] > self.config.stop_timeout_s:
                self._planner_resume = None
                self._set_fault(f"control error: {info['message']}; the arm was not at rest "
                                f"{self.config.stop_timeout_s} s later")
            return False
        self._planner_resume = None
        self._robot.recover_from_errors()
        self.gate.reset_to(snap.joint_positions_rad)
        logger.info("resuming after the planner failure (at rest %.3f s later)", snap.robot_time_s - info["t0"])
        return True

    def _link_lost(self, exc: BaseException) -> None:
        """The connection is gone (typed: franky.NetworkException): this fault replaces any earlier one."""
        reason = f"connection to {self.config.robot_host} lost: {exc}"
        logger.error("franka executor fault: %s", reason)
        with self._lock:
            self._fault = reason
            self._blender.reset()
            self.watchdog.disarm()
        self._pending = None
        self._stop = None
        self._release()
        with self._lock:
            self._snapshot = replace(self._snapshot, connected=False, fault=self._fault, executing=False)

    def _fail_requests(self) -> None:
        """Answer queued requests while disconnected (stop: nothing to stop; others refused)."""
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request.kind == "stop":
                request.result = None
            elif request.kind == "recover":
                request.error = ExecutionRefusedError(
                    f"robot {self.config.robot_host} not connected; it is retried every "
                    f"{self.config.reconnect_period_s} s, call recover() again once it is up")
            else:
                with self._lock:
                    fault = self._fault
                self.interventions.add("refused_faulted" if fault else "refused_disconnected")
                request.error = ExecutionRefusedError(f"faulted ({fault}): call recover() first" if fault
                                                      else f"not connected to the robot at {self.config.robot_host}")
            request.done.set()
