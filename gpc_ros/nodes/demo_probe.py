"""The ``gpc-ros demo``'s window on the running graph (an rclpy node inside the demo's own process).

It watches what the demo reports per episode and asks the driver for what an operator would: composed chunks on
``/gpc/action_chunk`` (count, observation-to-chunk latency = receipt time minus the chunk's observation stamp,
both on the graph's clock), the measured TCP (``ee_pose``), the driver's ``/diagnostics`` (its envelope
intervention counters), the driver's ``~/stop`` and ``~/enable`` services, and the composer's ``weights``
(``set_parameters``). Runs on the simulated clock (``use_sim_time``) like the graph. No decisions here: the demo
(:mod:`gpc_ros.demo.session`) drives it.
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from gpc_ros.nodes import conversions


class DemoProbe(Node):
    """See the module docstring; ``start()`` spins it in a background thread, ``close()`` ends it."""

    def __init__(self, first_action_delay_s: float, driver: str = "franka_driver", composer: str = "composer",
                 **kwargs) -> None:
        super().__init__("gpc_demo", parameter_overrides=[Parameter("use_sim_time", value=True)], **kwargs)
        self.first_action_delay_s = float(first_action_delay_s)
        self._lock = threading.Lock()
        self.chunks: list[tuple[float, float, float]] = []
        """(receipt wall time s, receipt graph time s, observation stamp s) per composed chunk."""
        self.pose: tuple[float, tuple[float, float, float]] | None = None
        """Latest (stamp s, TCP position m)."""
        self.driver_values: dict[str, str] = {}
        self.driver_stamp_s = -1.0
        self.driver_message = ""
        self.create_subscription(MultiDOFJointTrajectory, "/gpc/action_chunk", self._on_chunk, 50)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._stop = self.create_client(Trigger, f"/{driver}/stop")
        self._enable = self.create_client(SetBool, f"/{driver}/enable")
        self._params = self.create_client(SetParameters, f"/{composer}/set_parameters")
        self._driver = driver
        self._executor: MultiThreadedExecutor | None = None
        self._thread: threading.Thread | None = None

    # -- subscriptions ----------------------------------------------------------------------------------------------
    def now_s(self) -> float:
        """The graph's clock (the simulated time once /clock runs), s."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        stamp = conversions.stamp_to_seconds(msg.header.stamp) - self.first_action_delay_s
        with self._lock:
            self.chunks.append((time.monotonic(), self.now_s(), stamp))

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            self.pose = (conversions.stamp_to_seconds(msg.header.stamp), (p.x, p.y, p.z))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self._driver}:"):
                with self._lock:
                    self.driver_values = {v.key: v.value for v in status.values}
                    self.driver_stamp_s = conversions.stamp_to_seconds(msg.header.stamp)
                    self.driver_message = status.message

    def snapshot(self) -> tuple[list[tuple[float, float, float]], dict[str, str], float]:
        """(chunks so far, the driver's latest diagnostic values, their stamp)."""
        with self._lock:
            return list(self.chunks), dict(self.driver_values), self.driver_stamp_s

    # -- services ---------------------------------------------------------------------------------------------------
    def _call(self, client, request, timeout_s: float):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {client.srv_name} is not available after {timeout_s:.0f} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name} did not answer within {timeout_s:.0f} s")
            time.sleep(0.01)
        return future.result()

    def stop_driver(self, timeout_s: float) -> str:
        """``~/stop``: planned stop, answered once the arm is at rest (execution disabled)."""
        return self._call(self._stop, Trigger.Request(), timeout_s).message

    def enable_driver(self, flag: bool, timeout_s: float) -> str:
        """``~/enable``: allow (True) or forbid (False) execution."""
        return self._call(self._enable, SetBool.Request(data=bool(flag)), timeout_s).message

    def set_weights(self, weights: list[float], timeout_s: float) -> None:
        """Set the composer's ``weights`` (validated there; ``ValueError`` with its reason when refused)."""
        request = SetParameters.Request(parameters=[Parameter("weights", value=[float(w) for w in weights])
                                                    .to_parameter_msg()])
        result = self._call(self._params, request, timeout_s).results[0]
        if not result.successful:
            raise ValueError(f"the composer refused weights {weights}: {result.reason}")

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> "DemoProbe":
        """Spin in a background thread."""
        self._executor = MultiThreadedExecutor(num_threads=2)
        self._executor.add_node(self)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True, name="demo-probe")
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop spinning and destroy the node (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=2.0)
            self._executor = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.destroy_node()


def open_probe(first_action_delay_s: float) -> DemoProbe:
    """``rclpy.init`` (if needed) and a started :class:`DemoProbe` (the environment names the ROS domain)."""
    if not rclpy.ok():
        rclpy.init(args=[])
    return DemoProbe(first_action_delay_s).start()


def close_probe(probe: DemoProbe | None) -> None:
    """Close the probe and shut rclpy down."""
    if probe is not None:
        probe.close()
    rclpy.try_shutdown()
