"""pointcloud_node: depth images of one or more cameras -> a fixed-size PointCloud2 in the robot base frame.

Subscribes ``/camera/<n>/aligned_depth_to_color/{image_raw,camera_info}`` (and ``/camera/<n>/color/image_raw``
with ``with_color``) for every ``n`` in ``camera_names``; publishes ``output_topic`` (PointCloud2, x y z float32
[+ packed rgb], frame ``base_frame``) and /diagnostics. The camera-to-base extrinsics come from the parameters
``<n>.camera_to_base_xyz_m`` / ``<n>.camera_to_base_quat_xyzw`` (pose of ``<n>_color_optical_frame`` in the base
frame). Callbacks only convert and hand frames to a drop-oldest slot; a worker thread builds the clouds.
The image and camera-info subscriptions are reliable by default (``image_qos``; best effort loses large images
between processes on one machine, see docs/perception.md).
"""

from __future__ import annotations

import queue
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from gpc_ros.nodes import conversions
from gpc_ros.nodes.parameters import ConfigParameters
from gpc_ros.nodes.spin import spin_node
from gpc_ros.perception.pointcloud import PointCloudConfig, PointCloudPipeline, transform_from_xyz_quat
from gpc_ros.perception.view_assembly import CameraViewAssembler

CLOUD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)

#: ``image_qos`` parameter -> subscription profile of the depth / colour images and camera infos.
IMAGE_QOS = {
    "reliable": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE),
    "best_effort": qos_profile_sensor_data,
}
#: A problem that persists is logged again at most this often (s); a change of level is logged at once.
REPEAT_LOG_S = 5.0


class PointCloudNode(Node):
    """Depth (+ colour) images of ``camera_names`` -> one ``PointCloud2`` per primary frame, health on /diagnostics."""

    def __init__(self, **kwargs) -> None:
        super().__init__("pointcloud_node", **kwargs)
        describe = lambda text: ParameterDescriptor(description=text)  # noqa: E731
        self.camera_names = list(self.declare_parameter(
            "camera_names", ["camera"], describe("cameras to merge; the first is the primary (sets the rate)")).value)
        self.base_frame = self.declare_parameter("base_frame", "fr3_link0", describe("frame of the cloud")).value
        output_topic = self.declare_parameter("output_topic", "/gpc/points", describe("PointCloud2 topic")).value
        max_skew_s = self.declare_parameter(
            "max_camera_skew_s", 0.05, describe("other cameras' frames at most this far from the primary's (s)")).value
        self.frame_timeout_s = self.declare_parameter(
            "frame_timeout_s", 1.0, describe("no depth image for this long (s) -> WARN on /diagnostics")).value
        image_qos = self.declare_parameter(
            "image_qos", "reliable", describe("image subscriptions: 'reliable' (no frame lost on one machine) or "
                                              "'best_effort' (sensor data QoS; drops large images)")).value
        if image_qos not in IMAGE_QOS:
            raise ValueError(f"parameter image_qos must be one of {sorted(IMAGE_QOS)}; got {image_qos!r}")
        self.params = ConfigParameters(self, PointCloudConfig)  # descriptions: PointCloudConfig's docstring
        self.config: PointCloudConfig = self.params.config
        camera_to_base = {}
        for name in self.camera_names:
            xyz = self.declare_parameter(f"{name}.camera_to_base_xyz_m", [0.0, 0.0, 0.0],
                                         describe(f"position of {name}_color_optical_frame in base_frame (m)")).value
            quat = self.declare_parameter(f"{name}.camera_to_base_quat_xyzw", [0.0, 0.0, 0.0, 1.0],
                                          describe(f"orientation (x, y, z, w) of {name}_color_optical_frame")).value
            camera_to_base[name] = transform_from_xyz_quat(list(xyz), list(quat))
        self.pipeline = PointCloudPipeline(self.config)
        self.assembler = CameraViewAssembler(camera_to_base, max_skew_s, self.config.with_color)
        self._intrinsics: dict[str, object] = {}
        self._slot: queue.Queue = queue.Queue(maxsize=1)  # drop-oldest hand-over to the worker
        self._lock = threading.Lock()
        self._last = {"depth_s": None, "level": "ERROR", "message": "no depth image received yet", "clouds": 0}
        self._last_log_s = -float("inf")
        self.cloud_pub = self.create_publisher(PointCloud2, output_topic, CLOUD_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._build_clouds, name="pointcloud_worker", daemon=True)
        self._worker.start()
        for name in self.camera_names:
            prefix = f"/camera/{name}"
            self.create_subscription(CameraInfo, f"{prefix}/aligned_depth_to_color/camera_info",
                                     lambda msg, n=name: self.on_camera_info(n, msg), IMAGE_QOS[image_qos])
            self.create_subscription(Image, f"{prefix}/aligned_depth_to_color/image_raw",
                                     lambda msg, n=name: self.on_depth(n, msg), IMAGE_QOS[image_qos])
            if self.config.with_color:
                self.create_subscription(Image, f"{prefix}/color/image_raw",
                                         lambda msg, n=name: self.on_color(n, msg), IMAGE_QOS[image_qos])

    def on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        """Remember the intrinsics of ``camera``."""
        self._intrinsics[camera] = conversions.camera_info_to_intrinsics(msg)

    def on_color(self, camera: str, msg: Image) -> None:
        """Convert a colour image and offer it to the view assembler."""
        try:
            rgb = conversions.image_msg_to_rgb(msg)
        except ValueError as exc:
            self._report("ERROR", f"colour image of {camera} unusable: {exc}")
            return
        self._hand_over(self.assembler.add_color(camera, conversions.stamp_to_seconds(msg.header.stamp), rgb))

    def on_depth(self, camera: str, msg: Image) -> None:
        """Convert a depth image (skipped until ``camera``'s camera_info matches it) and offer it."""
        self._last["depth_s"] = self.get_clock().now().nanoseconds * 1e-9
        intrinsics = self._intrinsics.get(camera)
        if intrinsics is None or (intrinsics.width, intrinsics.height) != (msg.width, msg.height):
            self._report("WARN", f"depth image of {camera} without a matching camera_info yet: frame skipped")
            return
        try:
            depth_m = conversions.image_msg_to_depth_m(msg)
        except ValueError as exc:
            self._report("ERROR", f"depth image of {camera} unusable: {exc}")
            return
        self._hand_over(
            self.assembler.add_depth(camera, conversions.stamp_to_seconds(msg.header.stamp), depth_m, intrinsics))

    def _hand_over(self, assembled) -> None:
        """Give a complete set of views to the worker, replacing one it has not started on (drop-oldest)."""
        if assembled is None:
            return
        try:
            self._slot.put_nowait(assembled)
        except queue.Full:  # the worker is busy: replace the waiting frame with this newer one
            try:
                self._slot.get_nowait()
            except queue.Empty:
                pass
            self._slot.put_nowait(assembled)

    def _report(self, level: str, message: str) -> None:
        """Record the latest outcome for /diagnostics; log problems when the level changes, else every 5 s.

        Throttled here, not with rclpy's ``throttle_duration_sec``: rclpy fixes a call site's filters at its first
        call and raises ``ValueError`` when they change, which killed the worker thread (or the process).
        """
        now = time.monotonic()
        with self._lock:
            changed = level != self._last["level"]
            self._last["level"], self._last["message"] = level, message
            due = level != "OK" and (changed or now - self._last_log_s >= REPEAT_LOG_S)
            if due:
                self._last_log_s = now
        if due:
            (self.get_logger().error if level == "ERROR" else self.get_logger().warning)(message)

    def _build_clouds(self) -> None:
        while not self._stopping.is_set():
            try:
                assembled = self._slot.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                result = self.pipeline.process(assembled.views)
            except ValueError as exc:  # e.g. views the pipeline cannot use: report, keep serving later frames
                self._report("ERROR", f"frame dropped: {exc}")
                continue
            if result.skipped:
                self._report("WARN", result.reason)
                continue
            msg = conversions.pointcloud2_msg(result.points_base_m, conversions.seconds_to_stamp(assembled.stamp_s),
                                              self.base_frame, result.colors_rgb)
            try:
                self.cloud_pub.publish(msg)
            except RCLError:
                if self.context.ok():
                    raise
                return
            self._last["clouds"] += 1
            notes = [result.reason] if result.n_padded else []
            if assembled.missing:
                notes.append(f"cameras without a frame within max_camera_skew_s: {assembled.missing}")
            self._report("WARN" if notes else "OK", "; ".join(notes) or "publishing")

    def publish_diagnostics(self) -> None:
        """Publish the latest outcome (or a WARN when depth images stopped) on /diagnostics."""
        now_s = self.get_clock().now().nanoseconds * 1e-9
        with self._lock:
            level, message = self._last["level"], self._last["message"]
        depth_s = self._last["depth_s"]
        if depth_s is not None and now_s - depth_s > self.frame_timeout_s:
            level, message = "WARN", f"no depth image for {now_s - depth_s:.1f} s"
        self.diagnostics_pub.publish(conversions.diagnostic_array(
            f"{self.get_name()}: point cloud", level, message, ",".join(self.camera_names),
            {"clouds": self._last["clouds"], "num_points": self.config.num_points}, self.get_clock().now().to_msg()))

    def destroy_node(self) -> None:
        """Stop the worker, then the node."""
        self._stopping.set()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the node until shutdown."""
    spin_node(PointCloudNode, args)


if __name__ == "__main__":
    main()
