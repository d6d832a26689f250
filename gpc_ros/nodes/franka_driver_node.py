"""franka_driver_node: executes action chunks on a Franka FR3 through franky, under the safety envelope.

Subscribes ``/gpc/action_chunk`` (trajectory_msgs/MultiDOFJointTrajectory, end-effector targets) and
``/gpc/action_chunk_joint`` (trajectory_msgs/JointTrajectory, joint targets); publishes ``joint_states``
(sensor_msgs/JointState, fr3_joint1..7 + fr3_finger_joint1/2) and ``ee_pose`` (geometry_msgs/PoseStamped in
fr3_link0) at ``state_publish_rate_hz``, health on ``/diagnostics``; services ``~/stop`` and ``~/recover``
(std_srvs/Trigger) and ``~/enable`` (std_srvs/SetBool). Execution is disabled until enabled (``require_enable``).
Conventions: docs/messages.md ("Driver"); behaviour: docs/driver.md.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from gpc_ros.control.chunk import ChunkRejected
from gpc_ros.control.executor import ExecutionRefused, ExecutorConfig, FrankaExecutor
from gpc_ros.nodes import conversions
from gpc_ros.nodes.spin import spin_node


def _flat_fields(cls, prefix: str = "") -> list[tuple[str, object]]:
    """(parameter name, default) for every field of a config dataclass, nested ones dotted."""
    out = []
    for f in fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        if is_dataclass(default):
            out += _flat_fields(type(default), f"{prefix}{f.name}.")
            continue
        out.append((f"{prefix}{f.name}", list(default) if isinstance(default, tuple) else default))
    return out


def _build(cls, values: dict[str, object], prefix: str = ""):
    kwargs = {}
    for f in fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        if is_dataclass(default):
            kwargs[f.name] = _build(type(default), values, f"{prefix}{f.name}.")
        else:
            value = values[f"{prefix}{f.name}"]
            kwargs[f.name] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


class FrankaDriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("franka_driver", **kwargs)
        for name, default in _flat_fields(ExecutorConfig):
            self.declare_parameter(name, default, ParameterDescriptor(description=PARAMETER_DOCS.get(name, "")))
        self.declare_parameter("state_publish_rate_hz", 100.0, ParameterDescriptor(
            description="rate (Hz) of joint_states and ee_pose"))
        self.declare_parameter("diagnostics_period_s", 1.0, ParameterDescriptor(
            description="period (s) of the /diagnostics report"))
        values = {name: self.get_parameter(name).value for name, _ in _flat_fields(ExecutorConfig)}
        self.config = _build(ExecutorConfig, values)
        self.executor_core = FrankaExecutor(self.config, clock=self._now_s).start()
        self.joint_state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.pose_pub = self.create_publisher(PoseStamped, "ee_pose", 10)
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
        self._execute(conversions.chunk_from_multi_dof_trajectory, msg)

    def on_joint_chunk(self, msg: JointTrajectory) -> None:
        self._execute(conversions.chunk_from_joint_trajectory, msg)

    def _execute(self, convert, msg) -> None:
        try:
            self.executor_core.execute(convert(msg))
        except ChunkRejected as exc:
            self.executor_core.interventions.add("rejected_messages")
            self.get_logger().warning(f"chunk rejected: {exc}", throttle_duration_sec=1.0)
        except ExecutionRefused as exc:
            self.get_logger().warning(f"chunk not executed: {exc}", throttle_duration_sec=1.0)

    # -- state and health -------------------------------------------------------------------------------------------
    def publish_state(self) -> None:
        snap = self.executor_core.state
        if not snap.connected:
            return
        stamp = conversions.seconds_to_stamp(snap.time_s)
        self.joint_state_pub.publish(conversions.joint_state_from_snapshot(snap, stamp))
        self.pose_pub.publish(conversions.pose_stamped_from_snapshot(snap, stamp))

    def publish_diagnostics(self) -> None:
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
        try:
            self.executor_core.recover()
            response.success, response.message = True, "recovered"
        except ExecutionRefused as exc:
            response.success, response.message = False, str(exc)
        return response

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.executor_core.enable(bool(request.data))
        response.success = True
        response.message = "execution enabled" if request.data else "execution disabled (arm stopped)"
        self.get_logger().info(response.message)
        return response

    def destroy_node(self) -> None:
        self.executor_core.close()
        super().destroy_node()


#: Parameter descriptions (the dataclass docstrings in gpc_ros/control say more).
PARAMETER_DOCS = {
    "robot_host": "FCI address of the arm (franky-sim: its loopback address)",
    "control_rate_hz": "rate (Hz, >= 30) of streamed motion commands",
    "state_rate_hz": "rate (Hz) at which the robot state is read",
    "watchdog_timeout_s": "stop the arm when no chunk arrived for this long (s) while executing",
    "reconnect_period_s": "time (s) between reconnection attempts after losing the robot",
    "require_enable": "start with execution disabled until ~/enable is called with true",
    "timing.lookahead_s": "drop chunk steps due before now + this (s)",
    "timing.blend_mode": "seam blending: replace, crossfade or ensemble",
    "timing.crossfade_steps": "steps over which crossfade blends the old plan into the new chunk",
    "timing.ensemble_decay": "m in the temporal-ensembling weights exp(-m i), i = 0 oldest",
    "timing.ensemble_history": "how many recent chunks ensembling averages",
    "envelope.workspace_min_m": "lower corner x, y, z (m) of the end-effector box in fr3_link0",
    "envelope.workspace_max_m": "upper corner x, y, z (m) of the end-effector box in fr3_link0",
    "envelope.joint_lower_rad": "joint lower limits fr3_joint1..7 (rad)",
    "envelope.joint_upper_rad": "joint upper limits fr3_joint1..7 (rad)",
    "envelope.joint_limit_margin_rad": "margin (rad) kept inside the joint limits",
    "envelope.max_speed_m_s": "largest end-effector speed (m/s); also franky's limit",
    "envelope.max_rotation_speed_rad_s": "largest commanded end-effector rotation speed (rad/s)",
    "envelope.max_joint_speed_rad_s": "largest commanded joint speed (rad/s)",
    "envelope.max_target_jump_m": "consecutive targets further apart than this (m) reject the chunk",
    "envelope.max_target_jump_rad": "same for orientation / joint targets (rad)",
    "envelope.gripper_min_width_m": "smallest gripper width target (m)",
    "envelope.gripper_max_width_m": "largest gripper width target (m)",
    "envelope.gripper_max_force_n": "largest grasp force (N)",
    "envelope.gripper_speed_m_s": "gripper finger speed (m/s)",
    "envelope.relative_dynamics_factor": "franky relative dynamics factor in (0, 1] on top of the limits above",
    "streaming_mode": "joint (checked joint targets, the safe default) or cartesian",
    "urdf_path": "FR3 URDF for the kinematics ('' = this package's urdf/fr3.urdf, else franky-sim's)",
    "state_timeout_s": "no fresh robot state for this long (s): reported stale at once",
    "link_timeout_s": "no fresh robot state for this long (s): connection lost, reconnect",
    "max_future_lead_s": "chunks starting more than this (s) in the future are rejected; later ones held until due",
    "stop_timeout_s": "a planned stop not at rest after this long (s, robot clock) becomes a hard stop",
    "collision_torque_thresholds_nm": "franky set_collision_behavior joint torque thresholds (Nm)",
    "collision_force_thresholds_n": "franky set_collision_behavior Cartesian force/torque thresholds (N, Nm)",
    "load_mass_kg": "payload mass (kg, 0 = none) for franky set_load",
    "load_center_of_mass_m": "payload centre of mass in the flange frame (m)",
    "load_inertia_kg_m2": "payload inertia, column-major 3x3 (kg m^2)",
    "envelope.arm_points_min_m": "lower corner (m) of the box the elbow and wrist must stay in",
    "envelope.arm_points_max_m": "upper corner (m) of the elbow/wrist box",
    "envelope.joint_halt_margin_rad": "a measured joint closer than this (rad) to its limit halts with a fault",
    "envelope.min_manipulability": "commands below this TCP manipulability are not approached further",
    "envelope.max_acceleration_m_s2": "largest end-effector acceleration (m/s^2); also franky's limit",
    "envelope.max_jerk_m_s3": "largest end-effector jerk (m/s^3), franky's limit",
    "envelope.max_rotation_acceleration_rad_s2": "largest end-effector angular acceleration (rad/s^2)",
    "envelope.max_rotation_jerk_rad_s3": "largest end-effector angular jerk (rad/s^3)",
    "envelope.max_joint_acceleration_rad_s2": "largest joint acceleration (rad/s^2)",
    "envelope.max_joint_jerk_rad_s3": "largest joint jerk (rad/s^3)",
    "envelope.unreachable_policy": "unreachable pose targets: project (nearest reachable) or reject (hold)",
    "envelope.reachability_tolerance_m": "IK residual (m) above which a pose counts as unreachable",
    "envelope.measured_box_tolerance_m": "a measured TCP/elbow/wrist this far (m) outside its box halts the arm",
    "gripper.enabled": "connect to and command the Franka Hand",
    "gripper.min_period_s": "at most one gripper command per this period (s)",
    "gripper.deadband_m": "width changes smaller than this (m) are not sent",
    "gripper.grasp_below_m": "width targets at or below this (m) become a force-limited grasp",
    "gripper.grasp_force_n": "grasp force (N), clamped to envelope.gripper_max_force_n",
}


def main(args: list[str] | None = None) -> None:
    spin_node(FrankaDriverNode, args, threads=4)


if __name__ == "__main__":
    main()
