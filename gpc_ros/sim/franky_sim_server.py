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


#: While a client holds the simulation, one state packet this often (wall s) keeps franky's connection alive.
KEEPALIVE_S = 0.05
#: Either pace: while a motion runs, each physics tick first waits up to this long (wall s) for the client's
#: command answering the last state packet (:func:`_await_commands`).
COMMAND_WAIT_S = 0.01


def _await_commands(server, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until every robot server with a running motion has a command packet to read.

    A real FR3 and its client exchange one state and one command every millisecond, and libfranka's real-time loop
    keeps that pace. On a CPU-starved test machine (a cgroup quota, a loaded CI runner) the franky client can fall
    behind the simulator by tens of milliseconds (either pace): franky-sim then steps on with the stale command, the
    client answers the burst with one long step, and franky-sim's finite-difference ``dq_d`` jumps to 0.5-0.8 rad/s
    where the motion's limit was 0.02-0.5 rad/s. Every re-plan restarts franky's planner from that velocity: measured
    under a 0.7-core quota, joint 4 went 90-170 mrad past the target it was held at (CI: halted at -0.1697 rad).
    Waiting for the command keeps the simulator in step with its client, as the real robot is with a real-time
    client; a client that stays silent (gone, or stopped sending) costs at most ``timeout_s`` per tick.
    """
    sockets = []
    for rs in server.robot_servers:
        sock = getattr(rs, "_FrankaServer__udp_socket", None)
        if sock is not None and rs.current_motion_id:
            sockets.append(sock)
    if sockets:
        pending = set(sockets)
        deadline = time.monotonic() + timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0.0:
                return
            readable, _, _ = select.select(list(pending), [], [], remaining)
            pending.difference_update(readable)


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
        if command_wait_s > 0.0:
            _await_commands(server, command_wait_s)
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
