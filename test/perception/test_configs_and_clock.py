"""Config validation (field named in the error) and the hardware -> ROS timestamp rule, as tables of cases."""

from __future__ import annotations

import pytest

from gpc_ros.perception.camera_stream import CameraStreamConfig
from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import PointCloudConfig
from gpc_ros.perception.realsense_source import RealSenseConfig
from gpc_ros.perception.recorder import RecordingConfig
from gpc_ros.perception.timestamps import ClockMappingConfig, HardwareClockMapper

K = CameraIntrinsics(4, 3, 2.0, 2.0, 1.5, 1.0)


@pytest.mark.parametrize("build, field", [
    (lambda: PointCloudConfig(num_points=0), "num_points"),
    (lambda: PointCloudConfig(crop_min_m=(0, 0, 1), crop_max_m=(1, 1, 1)), "crop_min_m"),
    (lambda: PointCloudConfig(voxel_size_m=-0.1), "voxel_size_m"),
    (lambda: PointCloudConfig(min_depth_m=2.0, max_depth_m=1.0), "min_depth_m"),
    (lambda: PointCloudConfig(shortfall="repeat"), "shortfall"),
    (lambda: PointCloudConfig(backend="tensor"), "backend"),
    (lambda: PointCloudConfig(fps_backend="cuda"), "fps_backend"),
    (lambda: PointCloudConfig(min_points=0), "min_points"),
    (lambda: CameraStreamConfig(source="realsense", serial=""), "serial"),
    (lambda: CameraStreamConfig(source="playback"), "recording_path"),
    (lambda: CameraStreamConfig(source="usb", serial="1"), "source"),
    (lambda: CameraStreamConfig(serial="1", depth_encoding="mono16"), "depth_encoding"),
    (lambda: CameraStreamConfig(serial="1", camera_name="my camera"), "camera_name"),
    (lambda: CameraStreamConfig(serial="1", frame_timeout_s=0), "frame_timeout_s"),
    (lambda: CameraStreamConfig(serial="1", fps=25), "fps"),
    (lambda: RealSenseConfig("1", width=4000), "width"),
    (lambda: RecordingConfig("x.bag", K), "path"),
    (lambda: RecordingConfig("x.db3", K, fps=0), "fps"),
    (lambda: RecordingConfig("x.db3", K, depth_units_m=1.0), "depth_units_m"),
    (lambda: CameraIntrinsics(4, 3, -1.0, 2.0, 1.5, 1.0), "fx"),
    (lambda: ClockMappingConfig(max_drift_s=0), "max_drift_s"),
])
def test_bad_config_names_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


def test_offset_fixed_at_first_frame_keeps_device_intervals():
    mapper = HardwareClockMapper()
    # Host receive times jitter by milliseconds; the published stamps keep the device's exact 1/30 s spacing.
    receive = [100.000, 100.041, 100.068, 100.102]
    stamps = [mapper.to_ros(5.0 + i / 30, now) for i, now in enumerate(receive)]
    assert stamps[0] == pytest.approx(100.0)
    for i in range(1, 4):
        assert stamps[i] - stamps[i - 1] == pytest.approx(1 / 30, abs=1e-9)
    assert mapper.anchors == 1


@pytest.mark.parametrize("device_s, now_s, expected", [
    (4.0, 101.0, 101.0),   # device clock went back (camera reset, recording looped): re-anchor
    (5.1, 100.1, 100.1),   # normal: offset kept (5.1 + 95.0)
    (5.2, 110.0, 110.0),   # stall / drift beyond max_drift_s: re-anchor
])
def test_reanchoring_rule(device_s, now_s, expected):
    mapper = HardwareClockMapper(ClockMappingConfig(max_drift_s=0.5))
    mapper.to_ros(5.0, 100.0)
    assert mapper.to_ros(device_s, now_s) == pytest.approx(expected)
