"""Run a franky-sim FR3 server (MuJoCo physics, libfranka protocol) on one loopback address.

franky connects to it exactly as to a real FR3: ``franky.Robot("127.0.0.2")``. The robot listens on TCP 1337 and
the gripper on 1338 of ``host``, so several servers run side by side on different 127.x.y.z addresses.

Run it as ``gpc-ros sim-server --host 127.0.0.2`` or ``python -m gpc_ros.sim.franky_sim_server``; it prints
``READY <host>`` once the robot port accepts connections and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
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
    either way. ``fast`` keeps one core busy: run at most one fast server per free core."""

    def __post_init__(self) -> None:
        if not self.host.startswith("127."):
            raise ValueError(f"FrankySimConfig.host must be a loopback address 127.x.y.z, got {self.host!r}")
        if self.pace not in ("realtime", "fast"):
            raise ValueError(f"FrankySimConfig.pace must be 'realtime' or 'fast', got {self.pace!r}")


def serve(config: FrankySimConfig, stop: threading.Event, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator and its servers until ``stop`` is set."""
    import franky_sim  # heavy import (MuJoCo, pinocchio): only when a server really starts
    from franky_sim.mujoco_simulator import MujocoSimulator

    logging.getLogger("numba").setLevel(logging.WARNING)
    with MujocoSimulator(enable_visualization=False) as sim:
        sim.add_robot()
        with franky_sim.SimulationServer(sim, hostname_candidates=[config.host]) as server:
            # franky-sim sleeps to a tick period of ``1 ms * realtime``: 1.0 is real time, 1/FAST_SPEEDUP is the fast pace
            server.run_async(1.0 if config.pace == "realtime" else 1.0 / FAST_SPEEDUP)
            if on_ready is not None:
                on_ready(config.host)
            while not stop.wait(0.2):
                if server.async_thread is not None and not server.async_thread.is_alive():
                    raise RuntimeError("the franky-sim control loop stopped unexpectedly")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpc-ros sim-server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=FrankySimConfig.host, help="loopback address to bind (default %(default)s)")
    parser.add_argument("--pace", choices=["realtime", "fast"], default="realtime", help="simulation pace")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FrankySimConfig(host=args.host, pace=args.pace)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(config, stop, on_ready=lambda host: print(f"READY {host}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
