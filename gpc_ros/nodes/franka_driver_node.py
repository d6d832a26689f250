"""franka_driver_node: executes action chunks on a Franka FR3 through franky, under the safety envelope.

Subscribes ``/gpc/action_chunk`` (trajectory_msgs/MultiDOFJointTrajectory, end-effector targets) and
``/gpc/action_chunk_joint`` (trajectory_msgs/JointTrajectory, joint targets); publishes ``joint_states``
(sensor_msgs/JointState, fr3_joint1..7 + fr3_finger_joint1/2) and ``ee_pose`` (geometry_msgs/PoseStamped in
fr3_link0) at ``state_publish_rate_hz``, the running plan on ``/gpc/driver_plan`` (MultiDOFJointTrajectory,
on every change, transient local; no points = no Cartesian plan), health on ``/diagnostics``; services
``~/stop`` and ``~/recover`` (std_srvs/Trigger) and ``~/enable`` (std_srvs/SetBool). Execution is disabled
until enabled (``require_enable``).
Conventions: docs/messages.md ("Driver"); behaviour: docs/driver.md.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from gpc_ros.control.chunk import ChunkRejectedError
from gpc_ros.control.executor import ExecutionRefusedError, ExecutorConfig, FrankaExecutor
from gpc_ros.nodes import conversions
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node


class FrankaDriverNode(Node):
    """ROS front of :class:`~gpc_ros.control.executor.FrankaExecutor` (topics and services: see the module docstring).

    Parameters are the fields of :class:`~gpc_ros.control.executor.ExecutorConfig` plus ``state_publish_rate_hz``
    (Hz) and ``diagnostics_period_s`` (s). Destroying the node stops the arm and closes the executor.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("franka_driver", **kwargs)
        # descriptions: the docstrings of ExecutorConfig and its nested configs (gpc_ros/control)
        self.params = ConfigParameters(self, ExecutorConfig, descriptions=DESCRIPTIONS)
        self.declare_parameter("state_publish_rate_hz", 100.0, ParameterDescriptor(
            description="rate (Hz) of joint_states and ee_pose"))
        self.declare_parameter("diagnostics_period_s", 1.0, ParameterDescriptor(
            description="period (s) of the /diagnostics report"))
        self.config: ExecutorConfig = self.params.config
        self.executor_core = FrankaExecutor(self.config, clock=self._now_s).start()
        self.joint_state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.pose_pub = self.create_publisher(PoseStamped, "ee_pose", 10)
        self.plan_pub = self.create_publisher(MultiDOFJointTrajectory, conversions.DRIVER_PLAN_TOPIC,
                                              conversions.driver_plan_qos())
        self._published_plan: object = self  # sentinel: the first state tick publishes the plan (or its absence)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Services in their own callback groups (spun by a MultiThreadedExecutor): a stop never waits behind a
        # recover, and neither waits behind chunk callbacks or timers.
        self.create_service(Trigger, "~/stop", self.on_stop, callback_group=MutuallyExclusiveCallbackGroup())
        control = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/recover", self.on_recover, callback_group=control)
        self.create_service(SetBool, "~/enable", self.on_enable, callback_group=control)
        self.create_timer(1.0 / self.get_parameter("state_publish_rate_hz").value, self.publish_state)
        self.create_timer(self.get_parameter("diagnostics_period_s").value, self.publish_diagnostics)
        self.create_subscription(MultiDOFJointTrajectory, "/gpc/action_chunk", self.on_cartesian_chunk, 10)
        self.create_subscription(JointTrajectory, "/gpc/action_chunk_joint", self.on_joint_chunk, 10)
        self.get_logger().info(f"driving {self.config.robot_host}; execution "
                               f"{'disabled until ~/enable' if self.config.require_enable else 'enabled'}")

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- chunks -----------------------------------------------------------------------------------------------------
    def on_cartesian_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        """Execute an end-effector chunk; a rejected or refused one is logged (throttled) and dropped."""
        self._execute(conversions.chunk_from_multi_dof_trajectory, msg)

    def on_joint_chunk(self, msg: JointTrajectory) -> None:
        """Execute a joint chunk; a rejected or refused one is logged (throttled) and dropped."""
        self._execute(conversions.chunk_from_joint_trajectory, msg)

    def _execute(self, convert, msg) -> None:
        try:
            self.executor_core.execute(convert(msg))
        except ChunkRejectedError as exc:
            self.executor_core.interventions.add("rejected_messages")
            self.get_logger().warning(f"chunk rejected: {exc}", throttle_duration_sec=1.0)
        except ExecutionRefusedError as exc:
            self.get_logger().warning(f"chunk not executed: {exc}", throttle_duration_sec=1.0)

    # -- state and health -------------------------------------------------------------------------------------------
    def publish_state(self) -> None:
        """Publish ``joint_states``, ``ee_pose`` and, when it changed, the running plan.

        State and pose are stamped with the reading's time (nothing while disconnected); the plan goes out on
        ``/gpc/driver_plan`` whenever a chunk was blended in or the plan was dropped (stop, watchdog, disable).
        """
        plan = self.executor_core.plan
        if plan is not self._published_plan:
            self._published_plan = plan
            self.plan_pub.publish(conversions.driver_plan_msg(plan, self._now_s()))
        snap = self.executor_core.state
        if not snap.connected:
            return
        stamp = conversions.seconds_to_stamp(snap.time_s)
        self.joint_state_pub.publish(conversions.joint_state_from_snapshot(snap, stamp))
        self.pose_pub.publish(conversions.pose_stamped_from_snapshot(snap, stamp))

    def publish_diagnostics(self) -> None:
        """Publish the executor's health on ``/diagnostics``.

        ERROR on a fault, stale state or no connection; WARN when several nodes publish chunks or the watchdog
        holds; else OK (executing, idle or disabled). The values carry every counter and the publisher counts.
        """
        values = self.executor_core.diagnostics()
        snap = self.executor_core.state
        sources = {topic: self.count_publishers(topic) for topic in ("/gpc/action_chunk", "/gpc/action_chunk_joint")}
        values.update({f"publishers{topic}": str(n) for topic, n in sources.items()})
        crowded = [f"{n} publishers on {topic}" for topic, n in sources.items() if n > 1]
        if snap.fault:
            level, message = "ERROR", f"fault: {snap.fault} (call ~/recover)"
        elif snap.stale:
            level, message = "ERROR", f"robot state stale (no fresh reading from {self.config.robot_host})"
        elif not snap.connected:
            level, message = "ERROR", f"not connected to {self.config.robot_host}"
        elif crowded:
            level, message = "WARN", "; ".join(crowded) + " (chunks from several sources: older stamps are rejected)"
        elif snap.watchdog_tripped:
            level, message = "WARN", "watchdog: no fresh chunk, holding"
        else:
            level = "OK"
            message = ("executing" if snap.executing else "idle") if snap.enabled else "disabled (call ~/enable)"
        self.diagnostics_pub.publish(conversions.diagnostic_array(
            f"{self.get_name()}: executor", level, message, self.config.robot_host, values,
            self.get_clock().now().to_msg()))

    # -- services ---------------------------------------------------------------------------------------------------
    def on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """E-stop: franky's planned stop (hard stop as last resort); answers once at rest, with time and distance."""
        response.success = self.executor_core.stop()
        if not response.success:
            response.message = "stop not confirmed by the loop"
        else:
            report = self.executor_core.wait_stopped(self.config.stop_timeout_s * 10.0 + 5.0)
            response.message = ("stop sent; execution disabled" if report is None else
                                f"stopped ({report.kind}) in {report.time_to_rest_s:.3f} s over "
                                f"{report.distance_to_rest_m * 1e3:.1f} mm from {report.speed_at_stop_m_s:.3f} m/s; "
                                f"execution disabled")
        self.get_logger().warning("e-stop requested: " + response.message)
        return response

    def on_recover(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Clear a latched fault (``~/recover``); on failure ``success`` is False and the message says why."""
        try:
            self.executor_core.recover()
            response.success, response.message = True, "recovered"
        except ExecutionRefusedError as exc:
            response.success, response.message = False, str(exc)
        return response

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """Enable (``data`` true) or disable execution (``~/enable``); disabling stops the arm."""
        self.executor_core.enable(bool(request.data))
        response.success = True
        response.message = "execution enabled" if request.data else "execution disabled (arm stopped)"
        self.get_logger().info(response.message)
        return response

    def destroy_node(self) -> None:
        """Close the executor (planned stop, loop thread ended, robot released), then destroy the node."""
        self.executor_core.close()
        super().destroy_node()


#: Descriptions of the fields whose dataclass docstring is missing.
DESCRIPTIONS = {"envelope.gripper_min_width_m": "smallest gripper width target (m)"}


def main(args: list[str] | None = None) -> None:
    """Run the driver node until Ctrl-C (a 4-thread executor, so services never wait behind chunks)."""
    spin_node(FrankaDriverNode, args, threads=4)


if __name__ == "__main__":
    main()
