"""sim_clock_node: publishes the simulated cell's time on ``/clock`` (rosgraph_msgs/Clock) for ``use_sim_time``.

Reads the served cell's shared state (:class:`gpc_ros.sim.clock.SimClock`) every ``period_s`` wall seconds from its
own thread and publishes when the simulated time moved; nothing before the cell serves. Parameters:
:class:`gpc_ros.sim.clock.SimClockConfig`. Run as ``python -m gpc_ros.nodes.sim_clock_node --ros-args -p
sim_host:=127.0.0.2`` (docs/graph.md: the graph on the simulated cell).
"""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from gpc_ros.nodes import conversions
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node
from gpc_ros.sim.clock import SimClock, SimClockConfig


class SimClockNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim_clock", **kwargs)
        self.params = ConfigParameters(self, SimClockConfig)
        self.clock = SimClock(self.params.config)
        self.pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sim-clock")
        self._thread.start()
        self.get_logger().info(f"publishing the simulated time of {self.params.config.sim_host} on /clock")

    def _run(self) -> None:
        last = None
        while not self._stop.is_set() and rclpy.ok():
            try:
                now = self.clock.read()
            except TimeoutError:  # the cell's writer is gone mid-write: attach again
                self.clock.close()
                now = None
            if now is not None and now != last:
                self.pub.publish(Clock(clock=conversions.seconds_to_stamp(now)))
                last = now
            time.sleep(self.params.config.period_s)

    def destroy_node(self) -> None:
        """Stop the publishing thread, detach from the cell, destroy the node."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.clock.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the node until shutdown."""
    spin_node(SimClockNode, args)


if __name__ == "__main__":
    main()
