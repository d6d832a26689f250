"""camera_node as a real process playing a recording it was given: topics, encodings, frames, stamps, diagnostics."""

from __future__ import annotations

import numpy as np

from gpc_ros.paths import config_file
from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig
from gpc_ros.testing.spin import spin_until

K = CameraIntrinsics(64, 48, 60.0, 61.0, 31.5, 23.5)
DEPTHS_M = [0.4 + 0.1 * i for i in range(4)]


def record(path) -> None:
    with RealSenseRecorder(RecordingConfig(path, K, serial="918273645")) as recorder:
        for i, depth_m in enumerate(DEPTHS_M):
            depth = np.full((48, 64), depth_m, np.float32)
            depth[:4] = 0.0  # a band of "no data"
            recorder.write(depth, np.full((48, 64, 3), (10 * i, 20, 30), np.uint8), 50.0 + i / 30)


def start_camera_node(ros_domain, *params: str):
    return ros_domain.spawn_python("-m", "gpc_ros.nodes.camera_node", "--ros-args", "--params-file",
                                   str(config_file("camera.yaml")), *sum((["-p", p] for p in params), []))




def test_camera_node_publishes_a_recording(ros_domain, listener, tmp_path):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from gpc_ros.nodes import conversions

    path = tmp_path / "cam.db3"
    record(path)
    node, executor = listener
    got: dict[str, list] = {"color": [], "depth": [], "color_info": [], "depth_info": []}
    prefix = "/camera/wrist"
    for key, kind, topic in [("color", Image, "color/image_raw"), ("depth", Image, "aligned_depth_to_color/image_raw"),
                             ("color_info", CameraInfo, "color/camera_info"),
                             ("depth_info", CameraInfo, "aligned_depth_to_color/camera_info")]:
        node.create_subscription(kind, f"{prefix}/{topic}", got[key].append, qos_profile_sensor_data)
    proc = start_camera_node(ros_domain, "camera_name:=wrist", "source:=playback", f"recording_path:={path}",
                             "playback_loop:=true")
    assert spin_until(executor, lambda: all(len(v) >= 8 for v in got.values()), 30.0), (
        {k: len(v) for k, v in got.items()}, proc.poll())
    depth_msg, color_msg, info = got["depth"][-1], got["color"][-1], got["depth_info"][-1]
    assert depth_msg.encoding == "16UC1" and color_msg.encoding == "rgb8"
    assert {m.header.frame_id for v in got.values() for m in v} == {"wrist_color_optical_frame"}
    depth_m = conversions.image_msg_to_depth_m(depth_msg)
    assert np.all(depth_m[:4] == 0)
    level = depth_m[10, 10]
    assert any(abs(level - d) < 1e-6 for d in DEPTHS_M) and np.all(depth_m[4:] == level)
    # colour and depth of one frame share a stamp, and the colour is that frame's
    color_by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in got["color"]}
    matched = 0
    for msg in got["depth"]:
        partner = color_by_stamp.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if partner is not None:
            index = int(np.argmin([abs(conversions.image_msg_to_depth_m(msg)[10, 10] - d) for d in DEPTHS_M]))
            assert conversions.image_msg_to_rgb(partner)[0, 0, 0] == 10 * index
            matched += 1
    assert matched >= 4
    assert conversions.camera_info_to_intrinsics(info) == K
    # stamps are on the ROS clock (near now), spaced like the recording within one pass of the file
    stamps = [conversions.stamp_to_seconds(m.header.stamp) for m in got["depth"]]
    now_s = node.get_clock().now().nanoseconds * 1e-9
    assert abs(stamps[-1] - now_s) < 5.0
    # Within one pass of the file stamps step by whole recorded periods (paced playback may drop a late frame);
    # where the recording loops the mapping is re-anchored and the step is arbitrary (but still forward).
    steps = np.diff(stamps) * 30
    assert np.all(steps > 0)
    whole_periods = np.isclose(steps, np.round(steps), atol=3e-5) & (np.round(steps) >= 1)
    assert whole_periods.sum() >= len(steps) // 2, steps
    assert proc.poll() is None


def test_camera_node_stays_up_and_recovers_from_a_missing_file(ros_domain, listener, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    path = tmp_path / "not_yet.db3"
    node, executor = listener
    diagnostics, images = [], []
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    node.create_subscription(Image, "/camera/camera/aligned_depth_to_color/image_raw", images.append,
                             qos_profile_sensor_data)
    proc = start_camera_node(ros_domain, "source:=playback", f"recording_path:={path}", "reopen_period_s:=0.5")

    def error_reported() -> bool:
        return any(s.level == DiagnosticStatus.ERROR and "does not exist" in s.message
                   for d in diagnostics for s in d.status)

    assert spin_until(executor, error_reported, 30.0), [s.message for d in diagnostics for s in d.status]
    assert images == [] and proc.poll() is None
    record(path)
    assert spin_until(executor, lambda: len(images) >= 3, 30.0)
    assert proc.poll() is None


def test_camera_node_without_the_camera_reports_the_serial(ros_domain, listener):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    node, executor = listener
    statuses: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
    proc = start_camera_node(ros_domain, "source:=realsense", "serial:=135792468024")

    def reported() -> bool:
        return any(s.level == DiagnosticStatus.ERROR and "135792468024" in s.message and s.hardware_id == "135792468024"
                   for s in statuses)

    assert spin_until(executor, reported, 30.0), [s.message for s in statuses]
    assert proc.poll() is None
