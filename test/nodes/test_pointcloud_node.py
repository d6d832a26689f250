"""camera_node -> pointcloud_node as real processes: the published cloud has N points on the known scene."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.paths import config_file
from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import transform_from_xyz_quat
from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig
from gpc_ros.perception.synthetic_scene import Box, look_at, render_depth
from gpc_ros.testing.spin import spin_until

K = CameraIntrinsics(160, 120, 150.0, 150.0, 79.5, 59.5)
POSE = look_at([1.1, 0.0, 0.6], [0.55, 0.0, 0.0])  # the example pose in config/pointcloud.yaml
BOX = Box((0.5, -0.05, 0.0), (0.6, 0.05, 0.12))
TABLE_Z_M = 0.02



def test_camera_and_pointcloud_nodes_build_the_scene_cloud(ros_domain, rclpy_context, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from gpc_ros.nodes import conversions

    path = tmp_path / "scene.db3"
    depth, color = render_depth(K, POSE, TABLE_Z_M, [BOX])
    with RealSenseRecorder(RecordingConfig(path, K)) as recorder:
        for i in range(3):
            recorder.write(depth, color, i / 30)
    ros_domain.spawn_python("-m", "gpc_ros.nodes.camera_node", "--ros-args", "--params-file",
                            str(config_file("camera.yaml")), "-p", "source:=playback", "-p", f"recording_path:={path}")
    ros_domain.spawn_python("-m", "gpc_ros.nodes.pointcloud_node", "--ros-args", "--params-file",
                            str(config_file("pointcloud.yaml")), "-p", "num_points:=512", "-p", "with_color:=true",
                            "-p", "output_topic:=/test/points")
    node = Node("cloud_listener", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    clouds: list = []
    node.create_subscription(PointCloud2, "/test/points", clouds.append, qos_profile_sensor_data)
    try:
        assert spin_until(executor, lambda: len(clouds) >= 2, 60.0)
    finally:
        executor.shutdown()
        node.destroy_node()
    msg = clouds[-1]
    assert msg.header.frame_id == "fr3_link0" and msg.width == 512 and msg.height == 1
    points, colors = conversions.pointcloud2_to_numpy(msg)
    assert points.shape == (512, 3) and colors.shape == (512, 3)
    assert np.all(points >= np.array([0.2, -0.5, -0.05], np.float32))
    assert np.all(points <= np.array([0.9, 0.5, 0.6], np.float32))
    lo, hi = np.array(BOX.min_m[:2]) - 0.01, np.array(BOX.max_m[:2]) + 0.01
    near_box = np.all((points[:, :2] > lo) & (points[:, :2] < hi), axis=1)
    table = points[~near_box]
    assert len(table) > 100
    # table points at the table height: 1 mm depth quantisation and a 5 mm voxel
    np.testing.assert_allclose(table[:, 2], TABLE_Z_M, atol=0.004)
    assert np.all(colors[points[:, 2] > BOX.max_m[2] - 0.002] == BOX.color_rgb)
    on_box = points[points[:, 2] > TABLE_Z_M + 0.01]
    assert len(on_box) > 5
    assert on_box[:, 2].max() < BOX.max_m[2] + 0.004
    assert np.all(np.abs(on_box[:, 1]) < BOX.max_m[1] + 0.006)


def test_all_zero_depth_publishes_nothing_and_says_why(ros_domain, rclpy_context, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2

    path = tmp_path / "blind.db3"
    with RealSenseRecorder(RecordingConfig(path, K)) as recorder:
        for i in range(3):
            recorder.write(np.zeros((120, 160), np.float32), np.zeros((120, 160, 3), np.uint8), i / 30)
    ros_domain.spawn_python("-m", "gpc_ros.nodes.camera_node", "--ros-args", "--params-file",
                            str(config_file("camera.yaml")), "-p", "source:=playback", "-p", f"recording_path:={path}")
    cloud_node = ros_domain.spawn_python("-m", "gpc_ros.nodes.pointcloud_node", "--ros-args", "--params-file",
                                         str(config_file("pointcloud.yaml")))
    node = Node("blind_listener", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    clouds, depth_images, statuses = [], [], []
    node.create_subscription(PointCloud2, "/gpc/points", clouds.append, qos_profile_sensor_data)
    node.create_subscription(Image, "/camera/camera/aligned_depth_to_color/image_raw", depth_images.append,
                             qos_profile_sensor_data)
    node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: statuses.extend(s for s in msg.status if s.name.startswith("pointcloud_node")), 10)

    def skipped_reported() -> bool:
        return any(s.level == DiagnosticStatus.WARN and "skipped" in s.message for s in statuses)

    try:
        assert spin_until(executor, lambda: skipped_reported() and len(depth_images) >= 10, 60.0), (
            [s.message for s in statuses], len(depth_images))
    finally:
        executor.shutdown()
        node.destroy_node()
    assert clouds == []  # depth frames arrived, none became a cloud
    assert "0 valid depth pixels" in next(s.message for s in statuses if "skipped" in s.message)
    assert cloud_node.poll() is None


def _pose_params(name: str, pose: np.ndarray) -> list[str]:
    r = pose[:3, :3]
    # quaternion (x, y, z, w) of r: the eigenvector of the largest eigenvalue of Bar-Itzhack's symmetric matrix
    k = np.array([[r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
                  [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
                  [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
                  [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]]]) / 3
    quat = np.linalg.eigh(k)[1][:, -1]
    np.testing.assert_allclose(transform_from_xyz_quat(pose[:3, 3], quat), pose, atol=1e-9)
    fmt = lambda values: "[" + ",".join(f"{v:.9f}" for v in values) + "]"  # noqa: E731
    return ["-p", f"{name}.camera_to_base_xyz_m:={fmt(pose[:3, 3])}",
            "-p", f"{name}.camera_to_base_quat_xyzw:={fmt(quat)}"]


def test_two_camera_nodes_merge_into_one_cloud(ros_domain, rclpy_context, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from gpc_ros.nodes import conversions

    side_pose = look_at([0.55, 0.6, 0.6], [0.55, 0.0, 0.0])
    poses = {"front": POSE, "side": side_pose}
    for name, pose in poses.items():
        path = tmp_path / f"{name}.db3"
        depth, color = render_depth(K, pose, TABLE_Z_M, [BOX])
        with RealSenseRecorder(RecordingConfig(path, K, serial=name)) as recorder:
            for i in range(3):
                recorder.write(depth, color, i / 30)
        ros_domain.spawn_python("-m", "gpc_ros.nodes.camera_node", "--ros-args", "-r", f"__node:=camera_{name}",
                                "-p", f"camera_name:={name}", "-p", "source:=playback", "-p", f"recording_path:={path}",
                                "-p", "playback_loop:=true")
    ros_domain.spawn_python("-m", "gpc_ros.nodes.pointcloud_node", "--ros-args", "--params-file",
                            str(config_file("pointcloud.yaml")), "-p", "camera_names:=[front,side]",
                            "-p", "max_camera_skew_s:=0.5", *_pose_params("front", POSE),
                            *_pose_params("side", side_pose))
    node = Node("merge_listener", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    clouds: list = []
    node.create_subscription(PointCloud2, "/gpc/points", clouds.append, qos_profile_sensor_data)

    def on_side_face(msg) -> int:  # points inside the box's +y face, which only the side camera sees
        p, _ = conversions.pointcloud2_to_numpy(msg)
        return int(np.sum((np.abs(p[:, 1] - BOX.max_m[1]) < 0.006) & (p[:, 2] > TABLE_Z_M + 0.02)
                          & (p[:, 2] < BOX.max_m[2] - 0.02) & (p[:, 0] > BOX.min_m[0] + 0.015)
                          & (p[:, 0] < BOX.max_m[0] - 0.015)))

    try:
        assert spin_until(executor, lambda: any(on_side_face(m) > 0 for m in clouds[-3:]), 60.0), len(clouds)
    finally:
        executor.shutdown()
        node.destroy_node()
    points, _ = conversions.pointcloud2_to_numpy(clouds[-1])
    assert points.shape == (1024, 3) and clouds[-1].header.frame_id == "fr3_link0"
    assert points[:, 2].min() > TABLE_Z_M - 0.004  # both cameras' extrinsics put the table where it is


# --- bad input never stops the node (issue 10, item 9) ----------------------------------------------------------
# The inputs come from this test's own publisher (so the order of camera_info and depth, and all-zero frames, are
# under control); the node is the real pointcloud_node process. Each phase publishes until the node's
# /diagnostics shows the state it must report, so the test waits on conditions, not on timings.

def _scenario_params(scenario: str) -> list[str]:
    params = ["-p", "frame_timeout_s:=30.0"]  # slow publishing under load must not turn into a WARN of its own
    if scenario == "padding":
        params += ["-p", "num_points:=8000"]
    if scenario == "missing_camera":
        params += ["-p", "camera_names:=[camera,side]", *_pose_params("side", POSE)]
    return params


class _Feeder:
    """Publishes depth images (and camera infos) of the test scene to /camera/camera/... at ~20 Hz while spinning."""

    def __init__(self, node, executor) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.node, self.executor = node, executor
        prefix = "/camera/camera/aligned_depth_to_color"
        # the profile camera_node publishes with
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, f"{prefix}/camera_info", qos)
        self.depth_pub = node.create_publisher(Image, f"{prefix}/image_raw", qos)
        self.scene, _ = render_depth(K, POSE, TABLE_Z_M, [BOX])
        self.published = 0

    def run(self, predicate, *, zero: bool = False, with_info: bool = True, min_frames: int = 1,
            timeout_s: float = 60.0) -> bool:
        import time

        from gpc_ros.nodes import conversions

        start, deadline = self.published, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamp = self.node.get_clock().now().to_msg()
            if with_info:
                self.info_pub.publish(conversions.camera_info_msg(K, stamp, "camera_color_optical_frame"))
            depth = np.zeros_like(self.scene) if zero else self.scene
            self.depth_pub.publish(conversions.depth_to_image_msg(depth, stamp, "camera_color_optical_frame"))
            self.published += 1
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                self.executor.spin_once(timeout_sec=0.01)
            if self.published - start >= min_frames and predicate():
                return True
        return False


@pytest.mark.parametrize("scenario", ["zero_then_valid", "padding", "missing_camera", "depth_before_camera_info"])
def test_bad_input_never_stops_the_pointcloud_node(scenario: str, ros_domain, listener) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.pointcloud_node", "--ros-args", "--params-file",
                                   str(config_file("pointcloud.yaml")), *_scenario_params(scenario))
    node, executor = listener
    clouds, statuses = [], []
    node.create_subscription(PointCloud2, "/gpc/points", clouds.append, qos_profile_sensor_data)
    node.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: statuses.extend(s for s in msg.status if s.name.startswith("pointcloud_node")), 10)
    feeder = _Feeder(node, executor)
    assert spin_until(executor, lambda: feeder.depth_pub.get_subscription_count() > 0 and statuses, 60.0), \
        proc.poll()

    def reported(level: int, text: str, after: int = 0) -> bool:
        return any(s.level == level and text in s.message for s in statuses[after:])

    def clouds_at_least(n: int, after: int = 0):
        return lambda: len(clouds) >= after + n

    warn, ok = DiagnosticStatus.WARN, DiagnosticStatus.OK
    if scenario == "zero_then_valid":
        assert feeder.run(lambda: reported(warn, "0 valid depth pixels"), zero=True, min_frames=10), (
            [s.message for s in statuses], proc.poll())
        assert clouds == []
        mark = len(statuses)
        assert feeder.run(lambda: len(clouds) >= 10 and reported(ok, "publishing", mark)), (
            len(clouds), [s.message for s in statuses[mark:]], proc.poll())
    elif scenario == "padding":
        assert feeder.run(clouds_at_least(10)), (len(clouds), [s.message for s in statuses], proc.poll())
        mark = len(statuses)
        assert feeder.run(lambda: reported(warn, "points in the crop box: padded", mark), min_frames=5)
        assert all(m.width == 8000 for m in clouds)
    elif scenario == "missing_camera":
        assert feeder.run(clouds_at_least(10)), (len(clouds), [s.message for s in statuses], proc.poll())
        mark = len(statuses)
        assert feeder.run(lambda: reported(warn, "without a frame within max_camera_skew_s: ['side']", mark),
                          min_frames=5)
    else:  # depth images before any camera_info: skipped with a WARN, then clouds once the intrinsics arrive
        assert feeder.run(lambda: reported(warn, "without a matching camera_info"), with_info=False, min_frames=2), (
            [s.message for s in statuses], proc.poll())
        mark = len(statuses)
        assert feeder.run(lambda: len(clouds) >= 10 and reported(ok, "publishing", mark)), (
            len(clouds), [s.message for s in statuses[mark:]], proc.poll())

    def diagnosed_clouds() -> int:
        return int(next(v.value for v in statuses[-1].values if v.key == "clouds"))

    assert spin_until(executor, lambda: diagnosed_clouds() >= 10, 30.0), diagnosed_clouds()  # /diagnostics is live
    assert proc.poll() is None  # the process is still up


# --- PointCloud2 from other drivers (issue 10, item 12) ------------------------------------------------------------

def _cloud(points: np.ndarray, kinds: dict[str, str], big_endian: bool = False, pad: int = 0, height: int = 1):
    """A PointCloud2 laid out by hand with numpy (x/y/z/rgb of the given numpy kinds, ``pad`` extra bytes per point)."""
    from sensor_msgs.msg import PointCloud2, PointField

    codes = {"f4": PointField.FLOAT32, "f8": PointField.FLOAT64, "u4": PointField.UINT32, "i2": PointField.INT16}
    order = ">" if big_endian else "<"
    names = list(kinds)
    dtype = np.dtype({"names": names + ["_pad"], "formats": [order + kinds[n] for n in names] + [f"V{pad or 1}"]})
    table = np.zeros(len(points), dtype)
    for i, n in enumerate("xyz"):
        table[n] = points[:, i]
    if "rgb" in kinds:
        table["rgb"] = (np.arange(len(points)) % 256) << 16 | 7 << 8 | 9
    fields = [PointField(name=n, offset=dtype.fields[n][1], datatype=codes[kinds[n]], count=1) for n in names]
    width = len(points) // height
    return PointCloud2(height=height, width=width, fields=fields, is_bigendian=big_endian, point_step=dtype.itemsize,
                       row_step=dtype.itemsize * width, data=table.tobytes(), is_dense=True)


@pytest.mark.parametrize("kinds,big_endian", [({"x": "f8", "y": "f8", "z": "f8"}, False),
                                              ({"x": "f4", "y": "f4", "z": "f4", "rgb": "u4"}, True),
                                              ({"z": "f8", "x": "f8", "y": "f8", "rgb": "f4"}, False)])
def test_pointcloud2_fields_are_read_with_their_datatype_and_byte_order(kinds, big_endian) -> None:
    from gpc_ros.nodes import conversions

    points = np.random.default_rng(0).uniform(-2, 2, (40, 3))
    if kinds.get("rgb") == "f4":
        kinds = {k: ("u4" if k == "rgb" else v) for k, v in kinds.items()}  # packed bits; declared FLOAT32 below
    msg = _cloud(points, kinds, big_endian, pad=5, height=2)
    if "rgb" in kinds and not big_endian:
        from sensor_msgs.msg import PointField

        next(f for f in msg.fields if f.name == "rgb").datatype = PointField.FLOAT32  # the PCL packed-rgb float
    got, colors = conversions.pointcloud2_to_numpy(msg)
    np.testing.assert_allclose(got, points.astype(np.float32), rtol=0, atol=1e-6)
    assert got.dtype == np.float32
    if "rgb" in kinds:
        np.testing.assert_array_equal(colors, np.stack([np.arange(40) % 256, np.full(40, 7), np.full(40, 9)], 1))
    else:
        assert colors is None


def test_pointcloud2_with_an_unsupported_datatype_names_the_field() -> None:
    from gpc_ros.nodes import conversions

    msg = _cloud(np.zeros((4, 3)), {"x": "f4", "y": "i2", "z": "f4"})
    with pytest.raises(ValueError, match=r"field 'y' has datatype 3"):
        conversions.pointcloud2_to_numpy(msg)
