"""viewer_node and ``gpc-ros viewer``: the running graph in the Foxglove app.

No ROS install is needed on the viewing side (a Foxglove WebSocket server from foxglove-sdk, see
:mod:`gpc_ros.monitor.foxglove_view`).

The node is the monitor node (same scene: paths, envelope box, weights) that also forwards ``/gpc/points``,
every ``/camera/<n>/color/image_raw``, ``joint_states`` and the FR3's link transforms (forward kinematics of
urdf/fr3.urdf) and serves the URDF with its meshes. ``gpc-ros viewer [--host H] [--port P]`` runs it; the bringup
starts it through :func:`start_viewer`. Channels, colours and how to connect: docs/monitoring.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Mapping

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, PointCloud2

from gpc_ros.monitor.bag import TopicSpec
from gpc_ros.monitor.description import LinkPoser
from gpc_ros.monitor.foxglove_view import LiveView, ViewerConfig, ViewerError, urdf_for_foxglove
from gpc_ros.nodes import conversions
from gpc_ros.nodes.monitor_node import MonitorNode

COLOR_IMAGES = TopicSpec("/camera/*/color/image_raw", "", "")
#: The graph's camera (config/graph.yaml's default camera name ``camera``): advertised before any client connects.
DEFAULT_IMAGE_TOPICS = ("/camera/camera/color/image_raw",)


class ViewerNode(MonitorNode):
    """MonitorNode + the Foxglove server: the scene and the robot's topics, forwarded as they arrive."""

    def __init__(self, **kwargs) -> None:
        super().__init__("viewer_node", **kwargs)
        describe = lambda text: ParameterDescriptor(description=text)  # noqa: E731
        host = self.declare_parameter("host", ViewerConfig.host,
                                      describe("interface the Foxglove server binds (127.0.0.1 = this machine)")).value
        port = self.declare_parameter("port", ViewerConfig.port, describe("Foxglove WebSocket port")).value
        self.tf_period_s = 1.0 / self.declare_parameter(
            "tf_rate_hz", 30.0, describe("link transforms sent at most this often (Hz)")).value
        self.image_period_s = 1.0 / self.declare_parameter(
            "image_rate_hz", 10.0, describe("images forwarded at most this often per camera (Hz)")).value
        image_topics = list(self.declare_parameter(
            "image_topics", list(DEFAULT_IMAGE_TOPICS),
            describe("colour cameras advertised from the start (a client that connected before a camera found later "
                     "may miss it: docs/monitoring.md); others matching /camera/*/color/image_raw are found at run "
                     "time")).value)
        self._last_image: dict[str, float] = {}
        self.view = LiveView(ViewerConfig(host=host, port=int(port)), urdf_for_foxglove(), image_topics=image_topics)
        self.poser = LinkPoser()
        self._last_tf = 0.0
        self._image_subs: dict[str, object] = {}
        for topic in image_topics:
            self._subscribe_image(topic)
        points_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(PointCloud2, "/gpc/points", self.on_points, points_qos)
        self.create_subscription(JointState, "joint_states", self.on_joints, 10)
        self.create_timer(1.0, self.discover_images)
        self.create_timer(5.0, self.view.log_robot_description)
        self.view.log_robot_description()
        self.get_logger().info(f"Foxglove live view on {self.view.url}: in the Foxglove app, Open connection -> "
                               f"Foxglove WebSocket -> {self.view.url}")

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def publish(self) -> None:
        """Markers (if enabled) and the Foxglove scene."""
        super().publish()
        self.view.log_scene(self.scene.primitives(), self._now_s(), self.scene.config.frame_id)

    def on_points(self, msg: PointCloud2) -> None:
        """Forward the point cloud."""
        points, colors = conversions.pointcloud2_to_numpy(msg)
        self.view.log_points(points, conversions.stamp_to_seconds(msg.header.stamp), msg.header.frame_id, colors)

    def on_image(self, topic: str, msg: Image) -> None:
        """Forward a colour image (at most ``image_rate_hz``)."""
        now = time.monotonic()
        if now - self._last_image.get(topic, -1e9) < self.image_period_s:
            return  # 640x480 costs ~8 ms per frame to forward (bench/bench_monitor.py): not every one
        self._last_image[topic] = now
        try:
            rgb = conversions.image_msg_to_rgb(msg)
        except ValueError as exc:
            self.get_logger().warning(f"{topic}: {exc}", throttle_duration_sec=10.0)
            return
        self.view.log_image(topic, rgb, conversions.stamp_to_seconds(msg.header.stamp), msg.header.frame_id)

    def on_joints(self, msg: JointState) -> None:
        """Forward joint states; link transforms at most ``tf_rate_hz``."""
        t_s = conversions.stamp_to_seconds(msg.header.stamp)
        self.view.log_joint_states(list(msg.name), list(msg.position), t_s)
        now = time.monotonic()
        if now - self._last_tf < self.tf_period_s:
            return
        position: Mapping[str, float] = dict(zip(msg.name, msg.position))
        if not all(n in position for n in conversions.ARM_JOINT_NAMES):
            return
        q = [position[n] for n in conversions.ARM_JOINT_NAMES]
        width = sum(position.get(n, 0.0) for n in conversions.FINGER_JOINT_NAMES)
        self._last_tf = now
        self.view.log_transforms(self.poser.poses(q, width), t_s, conversions.BASE_FRAME)

    def _subscribe_image(self, topic: str) -> None:
        self._image_subs[topic] = self.create_subscription(
            Image, topic, lambda msg, topic=topic: self.on_image(topic, msg), qos_profile_sensor_data)
        self.get_logger().info(f"forwarding {topic}")

    def discover_images(self) -> None:
        """Subscribe to colour cameras that appeared."""
        for topic, types in self.get_topic_names_and_types():
            if COLOR_IMAGES.matches(topic) and topic not in self._image_subs and "sensor_msgs/msg/Image" in types:
                self._subscribe_image(topic)

    def destroy_node(self) -> None:
        """Stop the Foxglove server, then the node."""
        self.view.close()
        super().destroy_node()


def viewer_command(host: str = "127.0.0.1", port: int = 8765, ros_args: list[str] | None = None) -> list[str]:
    """The command line that runs the viewer node (what :func:`start_viewer` and ``gpc-ros viewer`` run)."""
    return [sys.executable, "-m", "gpc_ros.nodes.viewer_node", "--ros-args", "-p", f"host:={host}",
            "-p", f"port:={int(port)}", *(ros_args or [])]


def start_viewer(host: str = "127.0.0.1", port: int = 8765, env: Mapping[str, str] | None = None,
                 ros_args: list[str] | None = None, **popen_kwargs) -> subprocess.Popen:
    """Start the viewer node as a child process (for ``gpc-ros bringup --viewer``); stop it with terminate()."""
    return subprocess.Popen(viewer_command(host, port, ros_args), env=dict(env) if env is not None else None,
                            **popen_kwargs)


def main(argv: list[str] | None = None) -> int:
    """``gpc-ros viewer`` / ``python -m gpc_ros.nodes.viewer_node``: spin the viewer until Ctrl-C."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    own = argv[:len(argv) - len(ros_args)]
    parser = argparse.ArgumentParser(prog="gpc-ros viewer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="WebSocket port (default 8765)")
    args = parser.parse_args(own)
    extra = [a for flag, value in (("host", args.host), ("port", args.port)) if value is not None
             for a in ("-p", f"{flag}:={value}")]
    if extra:
        ros_args = (ros_args or ["--ros-args"]) + extra
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = None
    try:
        node = ViewerNode()
        rclpy.spin(node)
    except ViewerError as exc:
        print(f"gpc-ros viewer: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:  # the context shut down (Ctrl-C) while a wait set was built: a normal stop
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
