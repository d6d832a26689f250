"""policy_host_node: one parent policy behind the per-step exchange with the composer (docs/protocol.md).

Loads the parent (a checkpoint, or a ``module:function`` factory), keeps its observation window from
``/camera/<camera_name>/color/image_raw`` (image), ``points_topic`` (point cloud) and ``ee_pose`` (robot state), and
answers ``/gpc/hosts/<name>/request`` on ``/gpc/hosts/<name>/reply`` (std_msgs/Float64MultiArray). Announces the
parent (parameterisation, time convention, horizon, action dim, normalisation) as JSON on
``/gpc/hosts/<name>/announce`` (std_msgs/String, transient local); ``~/inject_nan`` (std_srvs/SetBool) makes it
answer NaN (fault drills); health on /diagnostics. Run as ``python -m gpc_ros.nodes.policy_host_node --ros-args
-r __node:=<name>_host --params-file config/graph_params.yaml``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from gpc_ros.action_space import pose_to_action
from gpc_ros.graph.affinity import parse_cpu_list, pin_process
from gpc_ros.graph.host import (
    HostConfig,
    HostCore,
    cloud_frame,
    fit_image,
    load_host_parent,
)
from gpc_ros.nodes import conversions
from gpc_ros.nodes.exchange import ExchangeEndpoint
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node

#: The exchange: reliable, deep enough for every request of one chunk.
EXCHANGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
#: Announcements: the last one is kept for late joiners (a composer started after the host still hears it).
ANNOUNCE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)


def host_topics(name: str) -> dict[str, str]:
    """The exchange topics of host ``name``."""
    return {kind: f"/gpc/hosts/{name}/{kind}" for kind in ("request", "reply", "announce")}


class PolicyHostNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "policy_host", exchange_dispatch: str = "waitset", own_process: bool = True,
                 **kwargs) -> None:
        """Build the node.

        ``exchange_dispatch``: the request / reply topics on their own minimal node and thread
        (:class:`~gpc_ros.nodes.exchange.ExchangeEndpoint`, dispatched by ``waitset`` or ``executor``); ``node`` = on
        this node, dispatched by its executor (the set-up before; the bench compares them). ``own_process``: the
        process is this host's, so ``cpu_affinity`` pins it; False for a host inside the composer's process.
        """
        super().__init__(node_name, **kwargs)
        self.params = ConfigParameters(self, HostConfig)
        config: HostConfig = self.params.config
        cpus = parse_cpu_list(config.cpu_affinity, "HostConfig.cpu_affinity")
        if cpus and own_process:
            self.get_logger().info(f"pinned to CPU(s) {pin_process(cpus)} (cpu_affinity {config.cpu_affinity!r})")
        elif cpus:
            self.get_logger().warning(f"cpu_affinity {config.cpu_affinity!r} ignored: this host runs inside the "
                                      f"composer's process (deployment in_process)")
        torch.set_num_threads(config.torch_threads)
        parent, observing = load_host_parent(config)
        self.core = HostCore(parent, observing, config.window_size)
        self.answered = 0
        self.frames = 0
        topics = host_topics(config.name)
        self.exchange = None if exchange_dispatch == "node" else ExchangeEndpoint(
            f"{self.get_name()}_exchange", self.context, exchange_dispatch)
        exchange_node = self.exchange if self.exchange is not None else self
        self.reply_pub = exchange_node.create_publisher(Float64MultiArray, topics["reply"], EXCHANGE_QOS)
        self.announce_pub = self.create_publisher(String, topics["announce"], ANNOUNCE_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/inject_nan", self.on_inject_nan)
        self.create_timer(1.0, self.publish_diagnostics)
        observations = MutuallyExclusiveCallbackGroup()  # frames never delay a step reply
        self.gripper_width_m = 0.0  # until joint_states names the fingers (the push_red home width: closed)
        if observing.state_dim or observing.modality == "state":
            self.create_subscription(PoseStamped, "ee_pose", self.on_pose, SENSOR_QOS, callback_group=observations)
        if observing.state_dim > 3:  # the 10-D state of gpc_ros.action_space also holds the gripper width
            self.create_subscription(JointState, "joint_states", self.on_joint_states, SENSOR_QOS,
                                     callback_group=observations)
        if observing.modality == "image":
            self.create_subscription(Image, f"/camera/{config.camera_name}/color/image_raw", self.on_image,
                                     SENSOR_QOS, callback_group=observations)
        elif observing.modality == "pointcloud":
            self.create_subscription(PointCloud2, config.points_topic, self.on_points, SENSOR_QOS,
                                     callback_group=observations)
        exchange_node.create_subscription(Float64MultiArray, topics["request"], self.on_request, EXCHANGE_QOS,
                                          callback_group=MutuallyExclusiveCallbackGroup())
        self.announce_pub.publish(String(data=json.dumps(self.core.announcement())))
        self.get_logger().info(f"hosting parent {config.name!r} ({observing.modality}, "
                               f"{self.core.parent.parameterization.value}, H={self.core.parent.action_horizon})")

    # -- observations -----------------------------------------------------------------------------------------------
    def on_pose(self, msg: PoseStamped) -> None:
        """The TCP pose (``ee_pose``) as the robot state in the action layout (position m, 6-D rotation, gripper m).

        A parent with ``state_dim`` 3 sees the position, one with 10 the whole vector (as in the cell's datasets).
        """
        p, q = msg.pose.position, msg.pose.orientation
        state = pose_to_action(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]), self.gripper_width_m)
        self.core.window.add_state(conversions.stamp_to_seconds(msg.header.stamp), state)

    def on_joint_states(self, msg: JointState) -> None:
        """``joint_states``: the gripper width (m) = the sum of the two finger joints (franka_ros2 names)."""
        fingers = [pos for name, pos in zip(msg.name, msg.position) if name in conversions.FINGER_JOINT_NAMES]
        if len(fingers) == 2:
            self.gripper_width_m = float(sum(fingers))

    def on_image(self, msg: Image) -> None:
        """A camera image: crop and resize it to the parent's input size and add it as a frame."""
        rgb = conversions.image_msg_to_rgb(msg)
        self.core.window.add_frame(conversions.stamp_to_seconds(msg.header.stamp),
                                   fit_image(rgb, self.core.observing.image_size))
        self.frames += 1

    def on_points(self, msg: PointCloud2) -> None:
        """A point cloud: subsample it to the parent's number of points and add it as a frame."""
        points, colors = conversions.pointcloud2_to_numpy(msg)
        try:
            frame = cloud_frame(points, colors, self.core.observing)
        except ValueError as exc:
            self.get_logger().error(f"dropped a cloud: {exc}", throttle_duration_sec=5.0)
            return
        self.core.window.add_frame(conversions.stamp_to_seconds(msg.header.stamp), frame)
        self.frames += 1

    # -- the exchange -----------------------------------------------------------------------------------------------
    def on_request(self, msg: Float64MultiArray) -> None:
        """An exchange request from the composer: answer it on the reply topic (malformed ones are logged)."""
        try:
            request = conversions.exchange_from_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f"ignored a malformed request: {exc}", throttle_duration_sec=1.0)
            return
        self.reply_pub.publish(conversions.exchange_to_msg(self.core.answer(request)))
        self.answered += 1

    def on_inject_nan(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """``~/inject_nan`` (fault drill): while true, every prediction is answered with NaN."""
        self.core.nan_injection = bool(request.data)
        response.success = True
        response.message = "answering NaN" if request.data else "answering normally"
        self.get_logger().warning(f"fault drill: {response.message}")
        return response

    def publish_diagnostics(self) -> None:
        """Publish the host's health: serving, no observation yet, or answering NaN (drill)."""
        level = "WARN" if self.core.nan_injection or not self.core.window.frames else "OK"
        message = ("fault drill: answering NaN" if self.core.nan_injection
                   else "no observation yet" if not self.core.window.frames else "serving")
        self.diagnostics_pub.publish(conversions.diagnostic_array(
            f"policy_host: {self.core.name}", level, message, self.params.config.checkpoint
            or self.params.config.factory, {"requests_answered": self.answered, "frames": self.frames,
                                            "modality": self.core.observing.modality},
            self.get_clock().now().to_msg()))


    def destroy_node(self) -> None:
        """Stop the exchange endpoint, then destroy this node."""
        if self.exchange is not None:
            self.exchange.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the policy host node (``python -m gpc_ros.nodes.policy_host_node``) until shutdown."""
    spin_node(PolicyHostNode, args, threads=2, fast_exit=True)


if __name__ == "__main__":
    main()
