"""camera_node: publishes one RGB-D camera (RealSense by serial, or a recording) like realsense2_camera does.

Topics (``<n>`` = camera_name): ``/camera/<n>/color/image_raw`` (rgb8), ``/camera/<n>/color/camera_info``,
``/camera/<n>/aligned_depth_to_color/image_raw`` (16UC1 mm or 32FC1 m), ``.../aligned_depth_to_color/camera_info``,
all in ``<n>_color_optical_frame`` with the frame's hardware timestamp mapped to ROS time; health on /diagnostics.
A worker thread waits for frames so the executor stays free for the diagnostics timer.
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from gpc_ros.nodes import conversions
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node
from gpc_ros.perception.camera_stream import CameraStream, CameraStreamConfig

#: Reliable, last 2: matches both reliable and best-effort (sensor-data) subscribers; 640x480 at 30 Hz needs
#: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (set by gpc_ros.ros_env.graph_env).
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)


class CameraNode(Node):
    """One RGB-D camera (live or recorded) published like realsense2_camera, health on /diagnostics."""

    def __init__(self, **kwargs) -> None:
        super().__init__("camera_node", **kwargs)
        # serials are digits: YAML and `-p serial:=123` make them integers, so the serial accepts both
        self.params = ConfigParameters(self, CameraStreamConfig, dynamic_typing=("serial",))
        self.config: CameraStreamConfig = self.params.config
        self.stream = CameraStream(self.config)
        prefix = f"/camera/{self.config.camera_name}"
        self.color_pub = self.create_publisher(Image, f"{prefix}/color/image_raw", IMAGE_QOS)
        self.color_info_pub = self.create_publisher(CameraInfo, f"{prefix}/color/camera_info", IMAGE_QOS)
        self.depth_pub = self.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", IMAGE_QOS)
        self.depth_info_pub = self.create_publisher(
            CameraInfo, f"{prefix}/aligned_depth_to_color/camera_info", IMAGE_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._stream_frames, name="camera_frames", daemon=True)
        self._worker.start()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stream_frames(self) -> None:
        while not self._stopping.is_set() and self.context.ok():
            stamped = self.stream.poll(self._now_s)
            if stamped is None:
                if self.stream.health(self._now_s()).level != "OK":
                    self._stopping.wait(0.05)  # not open / ended: do not spin
                continue
            try:
                self._publish(stamped)
            except RCLError:
                if self.context.ok():
                    raise
                return  # shutting down: the context went away between the check and the publish

    def _publish(self, stamped) -> None:
        """Colour, depth and their camera infos of one frame, all with the same stamp and frame id."""
        frame, stamp = stamped.frame, conversions.seconds_to_stamp(stamped.ros_stamp_s)
        frame_id = self.config.color_frame_id
        info = conversions.camera_info_msg(frame.intrinsics, stamp, frame_id)
        # camera infos first, so a subscriber has the intrinsics when the first image arrives
        self.depth_info_pub.publish(info)
        if frame.color_rgb is not None:
            self.color_info_pub.publish(info)
            self.color_pub.publish(conversions.rgb_to_image_msg(frame.color_rgb, stamp, frame_id))
        self.depth_pub.publish(
            conversions.depth_to_image_msg(frame.depth_m, stamp, frame_id, self.config.depth_encoding))

    def publish_diagnostics(self) -> None:
        """Publish the stream's health on /diagnostics."""
        health = self.stream.health(self._now_s())
        self.diagnostics_pub.publish(conversions.diagnostic_array(
            f"{self.get_name()}: {self.config.camera_name}", health.level, health.message,
            self.config.serial or self.config.recording_path, health.values, self.get_clock().now().to_msg()))

    def destroy_node(self) -> None:
        """Stop the frame worker and close the source, then the node."""
        self._stopping.set()
        self._worker.join(timeout=5.0)
        self.stream.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the node until shutdown."""
    spin_node(CameraNode, args)


if __name__ == "__main__":
    main()
