"""monitor_node: rviz markers of the composition on ``/gpc/markers`` (visualization_msgs/MarkerArray).

Subscribes ``/gpc/action_chunk`` (composed chunk), every ``/gpc/parents/<name>/chunk`` (discovered once a second),
``ee_pose`` (executed path) and ``/parameter_events`` (the composer's weights and operator), and publishes at
``publish_rate_hz`` the scene of :mod:`gpc_ros.monitor.scene`: paths in ``fr3_link0``, the envelope box, the
weights text. Colours and namespaces: docs/monitoring.md.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterEvent
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from gpc_ros.control.envelope import SafetyEnvelopeConfig
from gpc_ros.monitor.bag import TopicSpec
from gpc_ros.monitor.scene import Scene, SceneConfig
from gpc_ros.nodes import conversions
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node

PARENT_CHUNKS = TopicSpec("/gpc/parents/*/chunk", "", "")


class MonitorNode(Node):
    """Scene state from the graph's topics -> MarkerArray at a fixed rate."""

    def __init__(self, node_name: str = "monitor_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        describe = lambda text: ParameterDescriptor(description=text)  # noqa: E731
        scene_config: SceneConfig = ConfigParameters(self, SceneConfig).config
        env = SafetyEnvelopeConfig()
        box_min = self.declare_parameter("workspace_min_m", list(env.workspace_min_m),
                                         describe("envelope box min corner (m), as the driver's envelope")).value
        box_max = self.declare_parameter("workspace_max_m", list(env.workspace_max_m),
                                         describe("envelope box max corner (m), as the driver's envelope")).value
        rate = self.declare_parameter("publish_rate_hz", 10.0, describe("scene publishing rate (Hz)")).value
        self.publish_markers = self.declare_parameter(
            "publish_markers", node_name == "monitor_node", describe(f"publish {conversions.MARKER_TOPIC}")).value
        self.composer = self.declare_parameter(
            "composer_node", "/composer", describe("node whose parameters hold weights and operator")).value
        self.weight_keys = {
            "weights": self.declare_parameter("weights_parameter", "weights",
                                              describe("composer parameter with the weights (double[])")).value,
            "names": self.declare_parameter("names_parameter", "parents",
                                            describe("composer parameter with the parents' names (string[])")).value,
            "operator": self.declare_parameter("operator_parameter", "composer.operator",
                                               describe("composer parameter with the operator (string)")).value,
        }
        self.scene = Scene(scene_config)
        self.scene.set_envelope(box_min, box_max)
        self._composition: dict[str, object] = {}
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.marker_pub = self.create_publisher(MarkerArray, conversions.MARKER_TOPIC, reliable)
        self._parent_subs: dict[str, object] = {}
        self._param_client = self.create_client(GetParameters, f"{self.composer.rstrip('/')}/get_parameters")
        self._param_future = None
        self.create_subscription(MultiDOFJointTrajectory, "/gpc/action_chunk", self.on_composed, reliable)
        self.create_subscription(PoseStamped, "ee_pose", self.on_pose, 10)
        self.create_subscription(ParameterEvent, "/parameter_events", self.on_parameter_event, 50)
        self.create_timer(1.0, self.discover)
        self.create_timer(1.0 / rate, self.publish)
        self.discover()

    # ------------------------------------------------------------------ inputs
    def on_composed(self, msg: MultiDOFJointTrajectory) -> None:
        """The composed chunk's TCP path."""
        positions = conversions.chunk_positions_m(msg)
        if len(positions):
            self.scene.set_composed(positions)

    def on_parent(self, name: str, msg: MultiDOFJointTrajectory) -> None:
        """Parent ``name``'s own chunk."""
        positions = conversions.chunk_positions_m(msg)
        if len(positions):
            self.scene.set_parent(name, positions)

    def on_pose(self, msg: PoseStamped) -> None:
        """One measured TCP pose for the executed path."""
        p = msg.pose.position
        self.scene.add_executed((p.x, p.y, p.z))

    def _update_composition(self, values: dict[str, object]) -> None:
        self._composition.update(values)
        weights = self._composition.get("weights")
        names = self._composition.get("names")
        if weights is not None:
            weights = [float(w) for w in weights]
            if not names or len(names) != len(weights):
                names = [f"w{i + 1}" for i in range(len(weights))]
            self.scene.set_composition(self._composition.get("operator"), dict(zip(names, weights)))
        elif "operator" in self._composition:
            self.scene.set_composition(self._composition["operator"], None)

    def on_parameter_event(self, msg: ParameterEvent) -> None:
        """The composer's weights, names or operator changed."""
        if msg.node.rstrip("/") != self.composer.rstrip("/"):
            return
        by_name = {v: k for k, v in self.weight_keys.items()}
        values = {by_name[p.name]: parameter_value_to_python(p.value)
                  for p in list(msg.new_parameters) + list(msg.changed_parameters) if p.name in by_name}
        if values:
            self._update_composition(values)

    def _on_parameters(self, future) -> None:
        result = future.result()
        if result is None:
            return
        keys = list(self.weight_keys)
        values = {k: parameter_value_to_python(v) for k, v in zip(keys, result.values) if v.type != 0}
        self._update_composition({k: v for k, v in values.items() if k not in self._composition})

    def discover(self) -> None:
        """Subscribe to new parents' chunk topics; ask the composer for its weights until it answered once."""
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for topic, _ in self.get_topic_names_and_types():
            if PARENT_CHUNKS.matches(topic) and topic not in self._parent_subs:
                name = topic.strip("/").split("/")[2]
                self._parent_subs[topic] = self.create_subscription(
                    MultiDOFJointTrajectory, topic, lambda msg, name=name: self.on_parent(name, msg), reliable)
                self.get_logger().info(f"showing parent {name!r} from {topic}")
        if "weights" not in self._composition and self._param_future is None and self._param_client.service_is_ready():
            self._param_future = self._param_client.call_async(
                GetParameters.Request(names=list(self.weight_keys.values())))
            self._param_future.add_done_callback(self._on_parameters)

    # ------------------------------------------------------------------ output
    def publish(self) -> None:
        """Publish the scene as markers (when ``publish_markers``)."""
        if self.publish_markers:
            self.marker_pub.publish(conversions.marker_array_from_primitives(
                self.scene.primitives(), self.get_clock().now().to_msg(), self.scene.config.frame_id))


def main(args: list[str] | None = None) -> None:
    """Run the monitor node until Ctrl-C."""
    spin_node(MonitorNode, args)


if __name__ == "__main__":
    main()
