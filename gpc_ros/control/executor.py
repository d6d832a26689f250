"""The Franka executor: follows action chunks on an FR3 through franky, streaming clamped targets at a fixed rate.

Surface (like franky's): ``execute(chunk)``, ``stop()``, ``recover()``, ``enable(flag)``, read-only ``state``.
One background thread owns the only ``franky.Robot`` connection (franky-sim and the FCI accept one client) and
makes every franky call, so the caller's threads never block on the robot and never inherit the real-time
scheduling libfranka gives the thread it runs on. Each tick (``state_rate_hz``) it reads the robot state; every
``1 / control_rate_hz`` it samples the plan one control period ahead and sends one asynchronous, preemptive
``CartesianWaypointMotion`` (or joint motion) built by :class:`~gpc_ros.control.command_gate.CommandGate`.

Faults (connection lost, control errors) are stored, reported in ``state.fault`` and latched: the executor refuses
chunks until :meth:`recover` succeeds. After a lost connection it reconnects in the background every
``reconnect_period_s`` (the old ``franky.Robot`` is dead); motion still needs ``recover()``.
Execution starts disabled when ``require_enable`` (the default): nothing moves before ``enable(True)``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gpc_ros.control.chunk import ActionChunk, ChunkRejected
from gpc_ros.control.command_gate import CommandGate
from gpc_ros.control.envelope import InterventionCounter, SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.gripper import GripperCommander, GripperConfig
from gpc_ros.control.timing import SeamBlender, TimingConfig, sample
from gpc_ros.control.watchdog import Watchdog

logger = logging.getLogger(__name__)


class ExecutionRefused(RuntimeError):
    """The executor cannot take chunks now (disabled, faulted, not connected); the message says what to do."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything the driver needs: where the robot is, rates, and the component configs."""

    robot_host: str = "172.16.0.2"
    """FCI address of the arm (franky-sim: its loopback address, e.g. 127.0.0.2)."""
    control_rate_hz: float = 50.0
    """Rate at which streaming motions are sent (Hz, >= 30 for smooth motion)."""
    state_rate_hz: float = 200.0
    """Rate at which the robot state is read (Hz, >= control_rate_hz)."""
    watchdog_timeout_s: float = 0.5
    """Stop the arm when no chunk arrived for this long while executing (s)."""
    reconnect_period_s: float = 1.0
    """Time between reconnection attempts after the connection is lost (s)."""
    require_enable: bool = True
    """Start with execution disabled (chunks refused until enable(True))."""
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
        for name in ("watchdog_timeout_s", "reconnect_period_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"ExecutorConfig.{name} must be a number > 0 s, got {value!r}")

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz


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
    ee_position_m: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    """fr3_hand_tcp position in fr3_link0 (m)."""
    ee_quaternion_xyzw: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    gripper_width_m: float | None = None
    connected: bool = False
    enabled: bool = False
    executing: bool = False
    """A plan is being followed."""
    fault: str | None = None
    """Latched fault (None when healthy); cleared by recover()."""
    watchdog_tripped: bool = False
    commands_sent: int = 0
    """Streaming motions sent to franky so far."""
    state_samples: int = 0
    """Robot states read so far."""


def _pose_from_state(state) -> tuple[np.ndarray, np.ndarray]:
    affine = state.O_T_EE
    return np.array(affine.translation, dtype=np.float64), np.array(affine.quaternion, dtype=np.float64)


def _is_link_failure(exc: BaseException) -> bool:
    """franky raises NetworkException on a lost link, and the dead Robot then raises RuntimeError("Net Exception");
    any other RuntimeError (e.g. "Motion planner failed with error code -111") leaves the connection usable."""
    import franky

    return isinstance(exc, franky.NetworkException) or "Net" in str(exc)


def _default_robot_factory(host: str):
    import franky

    return franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)


def _default_gripper_factory(host: str):
    import franky

    return franky.Gripper(host)


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
        self.gate = CommandGate(self.envelope)
        self._blender = SeamBlender(config.timing)
        self.watchdog = Watchdog(config.watchdog_timeout_s, clock)
        self._lock = threading.Lock()
        self._robot = None
        self._gripper: GripperCommander | None = None
        self._enabled = not config.require_enable
        self._fault: str | None = None
        self._snapshot = RobotSnapshot()
        self._stop_request = threading.Event()
        self._stop_done = threading.Event()
        self._recover_request = threading.Event()
        self._recover_done = threading.Event()
        self._recover_result: str | None = None
        self._closing = threading.Event()
        self._connected_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._commands_sent = 0
        self._state_samples = 0
        self._last_connect_attempt_s = -np.inf
        self._motion_started = False
        self._state_listeners: list[Callable[[RobotSnapshot], None]] = []
        self.first_command_latency_s: float | None = None
        """Executor clock time from accepting the first chunk to sending its first motion (s), for benchmarks."""
        self.stop_handled_at_sample: int | None = None
        """``state_samples`` count when the loop carried out the last stop (tests count periods, not seconds)."""
        self._chunk_arrival_s: float | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> "FrankaExecutor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="franka-executor", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the arm, end the loop thread and drop the connection."""
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
        """Call ``callback(snapshot)`` from the loop thread after every state reading (keep it short)."""
        self._state_listeners.append(callback)

    # -- commands ---------------------------------------------------------------------------------------------------
    def execute(self, chunk: ActionChunk) -> ActionChunk | None:
        """Blend ``chunk`` into the plan; returns the new plan (None when the whole chunk was already past due).

        Raises :class:`ExecutionRefused` when disabled/faulted/disconnected and :class:`ChunkRejected` when the
        envelope rejects the chunk (a jump); the previous plan then continues unchanged.
        """
        if not isinstance(chunk, ActionChunk):
            raise TypeError(f"execute() takes an ActionChunk, got {type(chunk).__name__}")
        with self._lock:
            if self._fault is not None:
                self.interventions.add("refused_faulted")
                raise ExecutionRefused(f"faulted ({self._fault}): call recover() first")
            if not self._connected_event.is_set():
                self.interventions.add("refused_disconnected")
                raise ExecutionRefused(f"not connected to the robot at {self.config.robot_host}")
            if not self._enabled:
                self.interventions.add("refused_disabled")
                raise ExecutionRefused("execution is disabled: call enable(True) (the ~/enable service) first")
            now = self._clock()
            ref = self._reference_target(now)
            try:
                if chunk.is_cartesian:
                    self.envelope.check_chunk(chunk, ref[0], ref[1], None)
                else:
                    self.envelope.check_chunk(chunk, None, None, ref[2])
                plan = self._blender.add(chunk, now)
            except ChunkRejected:
                self.interventions.add("rejected_chunks")
                raise
            if plan is None:
                self.interventions.add("dropped_past_due_chunks")
                return None
            dropped = chunk.n_steps - sum(1 for t in chunk.times_s if t >= now + self.config.timing.lookahead_s - 1e-9)
            if dropped:
                self.interventions.add("dropped_past_due_steps", dropped)
            self.watchdog.feed()
            if self._chunk_arrival_s is None and not self._motion_started:
                self._chunk_arrival_s = now
            return plan

    def stop(self, timeout_s: float = 1.0) -> bool:
        """E-stop: disable execution, drop the plan and stop the arm (franky ``stop``) on the next loop tick.

        Returns whether the loop confirmed the stop within ``timeout_s`` (it always does while connected)."""
        with self._lock:
            self._enabled = False
            self._blender.reset()
            self.watchdog.disarm()
        self._stop_done.clear()
        self._stop_request.set()
        if not self._connected_event.is_set():
            return True  # nothing is moving what we cannot reach
        return self._stop_done.wait(timeout_s)

    def enable(self, flag: bool) -> None:
        """Allow (True) or forbid (False, also stops the arm) execution of chunks."""
        if not flag:
            self.stop()
            return
        with self._lock:
            self._enabled = True

    def recover(self, timeout_s: float = 5.0) -> None:
        """Clear a latched fault: franky ``recover_from_errors`` on the connected robot. Raises
        :class:`ExecutionRefused` if the robot is not connected (yet) or recovery failed."""
        self._recover_done.clear()
        self._recover_request.set()
        if not self._recover_done.wait(timeout_s):
            raise ExecutionRefused(f"recovery not confirmed within {timeout_s} s")
        if self._recover_result is not None:
            raise ExecutionRefused(self._recover_result)

    # -- read-only state --------------------------------------------------------------------------------------------
    @property
    def state(self) -> RobotSnapshot:
        """The latest reading and status (updated at ``state_rate_hz``)."""
        with self._lock:
            return self._snapshot

    @property
    def plan(self) -> ActionChunk | None:
        with self._lock:
            return self._blender.plan

    def diagnostics(self) -> dict[str, str]:
        """Key/value health report: connection, fault, watchdog, every intervention counter."""
        snap = self.state
        values = {
            "robot_host": self.config.robot_host,
            "connected": str(snap.connected),
            "enabled": str(snap.enabled),
            "executing": str(snap.executing),
            "fault": snap.fault or "",
            "watchdog_tripped": str(snap.watchdog_tripped),
            "watchdog_trips": str(self.watchdog.trips),
            "commands_sent": str(snap.commands_sent),
        }
        values.update({f"interventions.{k}": str(v) for k, v in sorted(self.interventions.snapshot().items())})
        return values

    # -- loop (the only thread that calls franky) -------------------------------------------------------------------
    def _reference_target(self, now: float) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        plan = self._blender.plan
        if plan is not None:
            t = sample(plan, now)
            return t.position_m, t.quaternion_xyzw, t.joint_positions_rad
        snap = self._snapshot
        if not np.all(np.isfinite(snap.ee_position_m)):
            return None, None, None
        return snap.ee_position_m, snap.ee_quaternion_xyzw, snap.joint_positions_rad

    def _set_fault(self, reason: str) -> None:
        logger.error("franka executor fault: %s", reason)
        with self._lock:
            self._fault = reason
            self._blender.reset()
            self.watchdog.disarm()

    def _connect(self) -> None:
        now = self._clock()
        if now - self._last_connect_attempt_s < self.config.reconnect_period_s:
            return
        self._last_connect_attempt_s = now
        try:
            robot = self._robot_factory(self.config.robot_host)
            import franky

            d = self.config.envelope.relative_dynamics_factor
            robot.relative_dynamics_factor = franky.RelativeDynamicsFactor(d, d, d)
            state = robot.state
        except Exception as exc:  # franky raises NetworkException/RuntimeError; all mean "not reachable now"
            logger.info("robot %s not reachable: %s", self.config.robot_host, exc)
            return
        gripper = None
        if self.config.gripper.enabled:
            try:
                gripper = GripperCommander(self._gripper_factory(self.config.robot_host), self.config.gripper,
                                           self.envelope, self._clock)
            except Exception as exc:
                logger.warning("gripper at %s not reachable (%s): continuing without it", self.config.robot_host, exc)
        pos, quat = _pose_from_state(state)
        self.gate.reset_to(pos, quat, np.array(state.q))
        self._robot, self._gripper = robot, gripper
        self._motion_started = False
        self._connected_event.set()
        logger.info("connected to robot %s", self.config.robot_host)

    def _disconnect(self, reason: str) -> None:
        self._robot = None
        self._gripper = None
        self._connected_event.clear()
        self._set_fault(reason)

    def _read_state(self, now: float) -> RobotSnapshot:
        robot = self._robot
        st = robot.state
        pos, quat = _pose_from_state(st)
        width = None
        if self._gripper is not None:
            try:
                width = self._gripper.width_m
            except Exception as exc:
                logger.warning("gripper width unreadable: %s", exc)
        self._state_samples += 1
        with self._lock:
            snap = RobotSnapshot(
                time_s=now, robot_time_s=st.time.to_sec(), joint_positions_rad=np.array(st.q), joint_velocities_rad_s=np.array(st.dq),
                ee_position_m=pos, ee_quaternion_xyzw=quat, gripper_width_m=width, connected=True,
                enabled=self._enabled, executing=self._blender.plan is not None, fault=self._fault,
                watchdog_tripped=self.watchdog.tripped, commands_sent=self._commands_sent,
                state_samples=self._state_samples)
            self._snapshot = snap
        return snap

    def _halt(self) -> None:
        """franky stop; the preemption it causes is expected and consumed."""
        import franky

        robot = self._robot
        robot.stop()
        try:
            robot.join_motion(timeout=0.5)
        except franky.ControlException:
            pass  # "Move command preempted": the stop itself
        self._motion_started = False
        snap_state = robot.state
        pos, quat = _pose_from_state(snap_state)
        self.gate.reset_to(pos, quat, np.array(snap_state.q))

    def _handle_requests(self) -> None:
        if self._stop_request.is_set():
            self._stop_request.clear()
            self.stop_handled_at_sample = self._state_samples
            if self._robot is not None:
                self._halt()
                if self._gripper is not None:
                    try:
                        self._gripper.stop()
                    except Exception as exc:
                        logger.warning("gripper stop failed: %s", exc)
            self._stop_done.set()
        if self._recover_request.is_set():
            self._recover_request.clear()
            if self._robot is None:
                self._recover_result = (f"robot {self.config.robot_host} not connected; it is retried every "
                                        f"{self.config.reconnect_period_s} s, call recover() again once it is up")
            else:
                try:
                    self._robot.recover_from_errors()
                    self._halt()
                    with self._lock:
                        self._fault = None
                        self._blender.reset()
                    self._recover_result = None
                    logger.info("recovered")
                except Exception as exc:
                    self._recover_result = f"recovery failed: {exc}"
            self._recover_done.set()

    def _command(self, now: float, snap: RobotSnapshot) -> None:
        period = self.config.control_period_s
        with self._lock:
            plan = self._blender.plan
            enabled = self._enabled and self._fault is None
        if plan is None or not enabled:
            return
        outside = self.envelope.joints_outside_limits(snap.joint_positions_rad)
        if outside:
            self.interventions.add("halted_joint_limit")
            logger.warning("measured joints %s beyond their limits minus margin: stopping", [i + 1 for i in outside])
            with self._lock:
                self._blender.reset()
                self.watchdog.disarm()
            self._halt()
            return
        if self.watchdog.check():
            self.interventions.add("watchdog_stops")
            logger.warning("no chunk for %.3f s (watchdog_timeout_s %.3f): holding", self.watchdog.age_s or -1.0,
                           self.config.watchdog_timeout_s)
            with self._lock:
                self._blender.reset()
            self._halt()
            return
        target = sample(plan, now + period)
        if plan.is_cartesian:
            ahead = sample(plan, now + 2.0 * period)
            velocity = (ahead.position_m - target.position_m) / period
            if now + period >= plan.end_time_s:
                velocity = np.zeros(3)
            motion, _ = self.gate.cartesian_motion(target.position_m, target.quaternion_xyzw, period, velocity)
        else:
            motion, _ = self.gate.joint_motion(target.joint_positions_rad, period)
        self._robot.move(motion, asynchronous=True)
        self._motion_started = True
        self._commands_sent += 1
        if self._chunk_arrival_s is not None:
            self.first_command_latency_s = self._clock() - self._chunk_arrival_s
            self._chunk_arrival_s = None
        if target.gripper_width_m is not None and self._gripper is not None:
            try:
                self._gripper.command(target.gripper_width_m)
            except ChunkRejected:
                raise
            except Exception as exc:
                logger.warning("gripper command failed: %s", exc)

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
                    self._handle_requests()
                    time.sleep(min(0.05, self.config.reconnect_period_s))
                    continue
            try:
                snap = self._read_state(now)
                self._handle_requests()
                if now >= next_command:
                    next_command = max(next_command + self.config.control_period_s, now)
                    self._command(now, snap)
                for listener in self._state_listeners:
                    listener(snap)
            except (franky.NetworkException, RuntimeError) as exc:
                if not _is_link_failure(exc):  # e.g. "Motion planner failed ... -111": the link is fine
                    self._set_fault(f"control error: {exc}")
                    continue
                self._disconnect(f"connection to {self.config.robot_host} lost: {exc}")
                with self._lock:
                    self._snapshot = replace(self._snapshot, connected=False, fault=self._fault, executing=False)
                continue
            except franky.Exception as exc:  # control/command errors (reflexes on a real arm): latch, keep link
                self._set_fault(f"control error: {exc}")
                continue
            except ChunkRejected as exc:  # a non-finite target sampled from a plan: cannot happen, but never send
                self._set_fault(f"internal: {exc}")
                continue
            time.sleep(max(0.0, tick - (time.monotonic() - t_tick)))
        if self._robot is not None:
            try:
                self._halt()
            except Exception as exc:
                logger.warning("stop on close failed: %s", exc)
        self._robot = None
        self._connected_event.clear()
