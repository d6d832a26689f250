"""Run a franky-sim FR3 server (MuJoCo physics, libfranka protocol) on one loopback address.

franky connects to it exactly as to a real FR3: ``franky.Robot("127.0.0.2")``. The robot listens on TCP 1337 and
the gripper on 1338 of ``host``, so several servers run side by side on different 127.x.y.z addresses.

Run it as ``gpc-ros sim-server --host 127.0.0.2`` or ``python -m gpc_ros.sim.franky_sim_server``; it prints
``READY <host>`` once the robot port accepts connections and stops cleanly on SIGINT/SIGTERM.

With ``--task push_red`` it serves the whole cell (docs/sim.md): table, the task's objects, cameras, the arm at the
task's home pose; it shares its state with renderers (:mod:`gpc_ros.sim.shared_state`) and takes resets on a
control socket (:mod:`gpc_ros.sim.cell_control`).
"""

from __future__ import annotations

import argparse
import logging
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Pace = Literal["realtime", "fast"]

#: Upper bound of the ``fast`` pace. Unbounded spinning (franky-sim's ``run_async(False)``) starves the franky client
#: and other processes on a 2-core machine; a bounded pace sleeps whenever it is ahead.
FAST_SPEEDUP = 4.0


@dataclass(frozen=True)
class FrankySimConfig:
    """How to run the simulated FR3."""

    host: str = "127.0.0.2"
    """Loopback address the robot (TCP 1337) and gripper (TCP 1338) servers bind to."""
    pace: Pace = "realtime"
    """``realtime``: one 1 ms physics tick per millisecond (about 0.9x real time here); ``fast``: up to
    ``FAST_SPEEDUP`` x real time, as far as the CPU allows (about 2.5x here). franky follows the simulator's clock
    either way, and the simulator waits for franky's commands while a motion runs (:func:`_await_commands`), so a
    starved client slows the simulated clock instead of falling behind it. ``fast`` keeps one core busy: run at most
    one fast server per free core."""

    task: str = ""
    """Serve the cell of this task (``push_red``); empty: the bare arm on franky-sim's ground plane."""

    def __post_init__(self) -> None:
        if self.task:
            from gpc_ros.sim.tasks import get_task

            get_task(self.task)
        if not self.host.startswith("127."):
            raise ValueError(f"FrankySimConfig.host must be a loopback address 127.x.y.z, got {self.host!r}")
        if self.pace not in ("realtime", "fast"):
            raise ValueError(f"FrankySimConfig.pace must be 'realtime' or 'fast', got {self.pace!r}")


def serve(config: FrankySimConfig, stop: threading.Event, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator and its servers until ``stop`` is set.

    Args:
        config: address, pace and task of the served cell.
        stop: set it (from any thread) to stop serving; the call then returns.
        on_ready: called once with ``config.host`` when the servers listen and the control loop runs.

    Raises:
        RuntimeError: the control loop thread died while serving.
    """
    import franky_sim  # heavy import (MuJoCo, pinocchio): only when a server really starts
    from franky_sim.mujoco_simulator import MujocoSimulator

    logging.getLogger("numba").setLevel(logging.WARNING)
    if config.task:
        from gpc_ros.sim.scene import new_simulator
        from gpc_ros.sim.tasks import get_task

        task = get_task(config.task)
        sim = new_simulator(task)
    else:
        task = None
        sim = MujocoSimulator(enable_visualization=False)
        sim.add_robot()
    with sim, franky_sim.SimulationServer(sim, hostname_candidates=[config.host]) as server:
        cleanup: list[Callable[[], None]] = []
        may_step: Callable[[], bool] = lambda: True
        for rs in server.robot_servers:
            CommandedState(rs).install()
        try:
            if task is not None:
                cleanup, may_step = _share_cell(sim, server, task, config.host)
            speedup = 1.0 if config.pace == "realtime" else FAST_SPEEDUP
            server.running = True
            server.async_thread = threading.Thread(target=_control_loop,
                                                   args=(server, speedup, may_step, COMMAND_WAIT_S),
                                                   daemon=True, name="franky-sim-loop")
            server.async_thread.start()
            if on_ready is not None:
                on_ready(config.host)
            while not stop.wait(0.2):
                if server.async_thread is not None and not server.async_thread.is_alive():
                    raise RuntimeError("the franky-sim control loop stopped unexpectedly")
        finally:
            server.running = False
            if server.async_thread is not None:
                server.async_thread.join(5.0)
            for close in cleanup:
                close()


#: After a state packet without a new command before it (a late client), this many packets carry franky-sim's own
#: derivative fields (its low-pass settles in about 20 ms), not the exact ones (:class:`CommandedState`).
LATE_CLIENT_PACKETS = 20


class CommandedState:
    """Report libfranka's *last commanded* state, as a real FR3 does, in place of franky-sim's filtered estimates.

    On a real robot ``q_d`` / ``O_T_EE_c`` are the last commanded joints / pose, and ``dq_d``, ``ddq_d`` /
    ``O_dP_EE_c``, ``O_ddP_EE_c`` their backward differences: libfranka's own rate limiter (``limitRate``) takes
    the commanded velocity as ``(q_c - q_d) / 1 ms`` and its acceleration as ``(that - dq_d) / 1 ms``, and the
    Cartesian twist from the translation and the rotation ``R_c R_last^T`` the same way. franky starts every new
    (preempting) motion's planner from them: the position from its own previous command, the velocity from ``dq_d``
    (``O_dP_EE_c``), the acceleration from ``ddq_d`` (``O_ddP_EE_c``).

    franky-sim 1.0.4 reports instead, in position modes, ``dq_d`` = a low-pass (alpha 0.95 per tick, about 20 ms
    behind) of the finite differences of ``q_d``, the same for ``O_dP_EE_c``, and ``ddq_d`` = the low-passed
    derivative of the *measured* joint velocity ``dq``. Measured with ``bench/replan_step_probe.py``: every re-plan
    then restarted franky's planner from a velocity 13-25 x (max acceleration x 1 ms) away from the one it was
    commanding; without the low-pass, from a measured acceleration 30 x its limit, which the jerk limit lets the
    planner shed only over tens of milliseconds (steps of 15-36 x the bound after the re-plan).

    So, in the state packets of a joint position motion, ``q_d`` is the last joint command received and ``dq_d``,
    ``ddq_d`` its exact backward differences; in a Cartesian pose motion ``O_T_EE_c`` is the last pose command and
    ``O_dP_EE_c`` (linear; angular from ``log(R R_last^T)``, base axes), ``O_ddP_EE_c`` its differences. The time
    between two commands is the client's: the difference of their message ids (the state packet each answers;
    libfranka's clock is the packet count, 1 ms each, a held cell's keep-alive packets included). Counting the
    packets the simulator sent instead gave, under a 0.7-core CPU quota where commands arrive late and in bursts,
    reported accelerations of 100-450 rad/s^2; franky started re-plans from them and a joint ran to 2.2 rad/s. A
    late client (a packet went out with no new command before it: the simulator stepped on with the old command,
    which a real FR3 never does: it extrapolates, and aborts after a few lost packets) gets franky-sim's own values
    in that packet and the next ``LATE_CLIENT_PACKETS`` - 1: franky extrapolates the milliseconds it skipped from
    them. With the exact values there, 2-3 of 12 scenarios of test_driver_starved.py halted per variant tried (0 of
    12 with franky-sim's values, and with this fallback). A new motion (mode change) starts at rest at its first
    command (until then franky-sim's position fields); idle reports zero velocities and accelerations. The other
    mode's fields, velocity and torque modes are franky-sim's own. The physics is untouched: franky-sim still tracks
    its own copy of the command (the same values after each physics step).
    """

    def __init__(self, robot_server) -> None:
        import pinocchio
        from franky_sim.franka_robot_protocol import UDPCommand

        self._log3 = pinocchio.log3
        self._parse = UDPCommand.from_bytes
        self._rs = robot_server
        self._handle_udp = robot_server._handle_udp_command
        self._pending = None  # the newest motion command received since the last state packet
        self._finished = False  # the client ended its motion since the last state packet
        robot_server.gpc_commanded_motion = 0  # motion id of the client's last command (read by _await_commands)
        self.reset()

    def install(self) -> "CommandedState":
        """Take over the robot server's state packets and watch its command packets."""
        self._rs._get_state_bytes = self._get_state_bytes
        self._rs._handle_udp_command = self._handle_udp_command
        return self

    def reset(self) -> None:
        """Forget the command history: the next commanded state starts at rest."""
        self._mode = None
        self._since_late = LATE_CLIENT_PACKETS  # state packets since one went out without a new command before it
        self._last_id = 0  # message id of the last command taken: the state packet it answered (libfranka's ms)
        self._last: np.ndarray | None = None  # joints (7,) or pose (4, 4)
        self._velocity: np.ndarray | None = None
        self._acceleration: np.ndarray | None = None

    def _handle_udp_command(self, data: bytes) -> None:
        self._handle_udp(data)
        self._rs.gpc_commanded_motion = self._rs.current_motion_id  # the client commands in it (0: it ended)
        command = self._parse(data)
        if command.message_id > 0 and not (command.motion_generation_finished or command.torque_command_finished):
            self._pending = command
        elif command.motion_generation_finished or command.torque_command_finished:
            self._finished = True

    def _get_state_bytes(self) -> bytes:
        return self.report(self._rs.robot_state).pack_state()

    def report(self, state):
        """``state`` (franky-sim's ``FrankaRobotState``) with the commanded fields replaced; one call per packet."""
        command, self._pending = self._pending, None
        finished, self._finished = self._finished, False
        mode = getattr(state.motion_generator_mode, "name", str(state.motion_generator_mode))
        late = command is None and not finished and mode == self._mode and self._last is not None
        self._since_late = 0 if late else self._since_late + 1
        joint = mode == "kJointPosition"
        if mode != self._mode:
            self.reset()
            self._mode = mode
            if joint or mode == "kCartesianPosition":  # a motion starts at rest, at its first command
                self._velocity = np.zeros(7 if joint else 6)
                self._acceleration = np.zeros_like(self._velocity)
                if command is not None:
                    self._last, self._last_id = self._value(command, joint), command.message_id
        elif self._velocity is not None and self._last is None and command is not None:
            self._last, self._last_id = self._value(command, joint), command.message_id
        elif self._last is not None and command is not None and command.message_id > self._last_id:
            value = self._value(command, joint)
            dt = 1e-3 * (command.message_id - self._last_id)
            if joint:
                velocity = (value - self._last) / dt
            else:
                velocity = np.concatenate([(value[:3, 3] - self._last[:3, 3]) / dt,
                                           self._log3(value[:3, :3] @ self._last[:3, :3].T) / dt])
            self._acceleration = (velocity - self._velocity) / dt
            self._velocity, self._last, self._last_id = velocity, value, command.message_id
        if self._since_late < LATE_CLIENT_PACKETS:
            # A late client (see the class doc): franky-sim's own values, from the arm braking on the held command.
            return state
        if joint:
            q_d = state.q_d if self._last is None else tuple(self._last.tolist())
            return state.replace(q_d=q_d, dq_d=tuple(self._velocity.tolist()),
                                 ddq_d=tuple(self._acceleration.tolist()))
        if mode == "kCartesianPosition":
            pose = state.O_T_EE_c if self._last is None else tuple(self._last.flatten(order="F").tolist())
            return state.replace(O_T_EE_c=pose, O_dP_EE_c=tuple(self._velocity.tolist()),
                                 O_ddP_EE_c=tuple(self._acceleration.tolist()))
        if mode == "kIdle":
            return state.replace(dq_d=(0.0,) * 7, ddq_d=(0.0,) * 7, O_dP_EE_c=(0.0,) * 6, O_ddP_EE_c=(0.0,) * 6)
        return state

    @staticmethod
    def _value(command, joint: bool) -> np.ndarray:
        if joint:
            return np.array(command.q_c, dtype=np.float64)
        return np.array(command.O_T_EE_c, dtype=np.float64).reshape((4, 4), order="F")


#: While a client holds the simulation, one state packet this often (wall s) keeps franky's connection alive.
KEEPALIVE_S = 0.05
#: Either pace: while a motion the client commands in runs, each physics tick first waits up to this long (wall s)
#: for the client's command answering the last state packet (:func:`_await_commands`). 10 ms until 2026-12-03: a CPU
#: quota's CFS throttling (up to 30 ms per 100 ms period at 0.7 of a core) outlasted it, and the simulator stepped on
#: 0-40 times per scenario of test_driver_starved.py; with 100 ms, never (docs/sim.md, *Clock, pace and lock-step*).
COMMAND_WAIT_S = 0.1
#: The same wait before the client's first command in a motion (:func:`_await_commands`): as before 2026-12-03.
START_COMMAND_WAIT_S = 0.01
#: How the server's log counts the ticks it stepped on without a commanded motion's command (read back by
#: :meth:`gpc_ros.sim.franky_sim_process.FrankySimProcess.stepped_on`).
STEPPED_ON_FORMAT = "%d times so far"


def _await_commands(server, timeout_s: float, start_timeout_s: float = START_COMMAND_WAIT_S) -> bool:
    """Wait (at most ``timeout_s``) until every robot server with a running motion has a command packet to read.

    A real FR3 and its client exchange one state and one command every millisecond, and libfranka's real-time loop
    keeps that pace. On a CPU-starved test machine (a cgroup quota, a loaded CI runner) the franky client can fall
    behind the simulator by tens of milliseconds (either pace): franky-sim then steps on with the stale command, the
    client answers the burst with one long step, and franky-sim's finite-difference ``dq_d`` jumps to 0.5-0.8 rad/s
    where the motion's limit was 0.02-0.5 rad/s. Every re-plan restarts franky's planner from that velocity: measured
    under a 0.7-core quota, joint 4 went 90-170 mrad past the target it was held at (CI: halted at -0.1697 rad).
    Waiting for the command keeps the simulator in step with its client, as the real robot is with a real-time
    client; a client that stays silent (gone, or stopped sending) costs at most ``timeout_s`` per tick.

    Until the client has sent its first command in a motion (:class:`CommandedState` marks the robot server), a
    tick waits at most ``start_timeout_s``: libfranka sends that command only after a state packet or two of the new
    motion, so the tick right after the start has nothing to wait for, while the next ones should give a slow
    client its chance (without that wait, under load, the simulator ran ahead of a motion's first commands and
    franky's 1 kHz stream stepped at a later re-plan: test_stream_end_sim.py failed 2 of 27 runs with three CPU hogs).

    Returns:
        False when the wait ran out with a commanded motion's command still missing: the tick steps on without it
        (a motion not yet commanded in does not count).
    """
    commanded, starting = set(), set()
    for rs in server.robot_servers:
        sock = getattr(rs, "_FrankaServer__udp_socket", None)
        motion = rs.current_motion_id
        if sock is not None and motion:
            (commanded if getattr(rs, "gpc_commanded_motion", motion) == motion else starting).add(sock)
    if not (commanded or starting):
        return True
    now = time.monotonic()
    deadline, start_deadline = now + timeout_s, now + min(start_timeout_s, timeout_s)
    while commanded or starting:
        now = time.monotonic()
        if starting and now >= start_deadline:
            starting = set()
            continue
        if now >= deadline:
            return not commanded
        until = min(deadline, start_deadline) if starting else deadline
        readable, _, _ = select.select(list(commanded | starting), [], [], until - now)
        commanded.difference_update(readable)
        starting.difference_update(readable)
    return True


def _control_loop(server, speedup: float, may_step: Callable[[], bool] = lambda: True,
                  command_wait_s: float = 0.0) -> None:
    """franky-sim's tick (commands in, one 1 ms physics step, state out), paced to at most ``speedup`` x real time.

    franky-sim's own ``run_async`` sleeps after *every* tick (``time.sleep(0)`` when behind), which on a loaded
    2-core machine hands the CPU away a thousand times per simulated second (measured: ~1.5 ms lost per tick).
    This loop sleeps only when it is ahead of the paced schedule, and never bursts to catch up after a stall.
    ``may_step() == False`` holds the simulation (a client's barrier, :mod:`gpc_ros.sim.shared_state`).
    ``command_wait_s > 0`` waits for a running motion's command before each tick (:func:`_await_commands`).
    """
    tick_s = 0.001
    wall0, ticks = time.monotonic(), 0
    keepalive_s = 0.0
    stepped_on = 0  # ticks that stepped on without a running motion's command
    while server.running:
        if not may_step():
            # held: no physics, but one state packet every KEEPALIVE_S keeps libfranka's link alive (its clock is
            # the packet counter, so franky's time creeps on by 1 ms per keep-alive while the physics waits)
            now = time.monotonic()
            if now - keepalive_s >= KEEPALIVE_S:
                for rs in server.robot_servers:
                    rs.process_commands()
                    rs.send_state()
                keepalive_s = now
            time.sleep(0.0005)
            wall0, ticks = time.monotonic(), 0
            continue
        if command_wait_s > 0.0 and not _await_commands(server, command_wait_s):
            stepped_on += 1
            logger.warning("the franky client sent no command within %.0f ms: the simulator stepped on with its last "
                           "command (" + STEPPED_ON_FORMAT + "; a real FR3 would abort the motion)",
                           1e3 * command_wait_s, stepped_on)
        for rs in server.robot_servers:
            rs.process_commands()
        server.sim.step()
        for rs in server.robot_servers:
            rs.send_state()
        ticks += 1
        ahead = ticks * tick_s / speedup - (time.monotonic() - wall0)
        if ahead > 0.002:
            time.sleep(ahead)
        elif ahead < -0.05:  # fell behind (load): pace from here instead of running fast to catch up
            wall0, ticks = time.monotonic(), 0


def _share_cell(sim, server, task, host: str) -> tuple[list[Callable[[], None]], Callable[[], bool]]:
    """Shared state (written after every physics step), meta file and control socket of a served cell."""
    import os

    from gpc_ros.sim.cell_control import CellController
    from gpc_ros.sim.shared_state import SharedStateWriter, cell_paths, write_meta

    state_path, meta_path, socket_path = cell_paths(host)
    data = sim.data
    writer = SharedStateWriter(state_path, sim.model.nq)
    writer.write(float(data.time), data.qpos)
    controller = CellController(sim, server, task, socket_path)
    sim.register_post_step_callback(lambda s: writer.write(float(data.time), data.qpos))
    write_meta(meta_path, {"task": task.name, "host": host, "pid": os.getpid(), "nq": int(sim.model.nq)})
    return ([controller.close, writer.close, lambda: meta_path.unlink(missing_ok=True)],
            lambda: writer.may_step(float(data.time)))


def main(argv: list[str] | None = None) -> int:
    """``gpc-ros sim-server``: serve the simulated FR3 (and the task's cell) until SIGINT or SIGTERM.

    Prints ``READY <host>`` once the servers listen and the control loop runs (see :func:`serve`).

    Args:
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        Exit code 0 after a clean stop (bad arguments exit with 2 through argparse).
    """
    parser = argparse.ArgumentParser(prog="gpc-ros sim-server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=FrankySimConfig.host, help="loopback address to bind (default %(default)s)")
    parser.add_argument("--pace", choices=["realtime", "fast"], default="realtime", help="simulation pace")
    parser.add_argument("--task", default="", help="serve the cell of this task (push_red): table, objects, cameras, "
                        "shared state for sim cameras and a reset channel (default: the bare arm)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = FrankySimConfig(host=args.host, pace=args.pace, task=args.task)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(config, stop, on_ready=lambda host: print(f"READY {host}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
