"""Config validation (field named in the error) and the hardware -> ROS timestamp rule, as tables of cases."""

from __future__ import annotations

import numpy as np
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


def test_stamps_never_go_back_when_a_fast_source_re_anchors():
    """Unpaced playback (issue 10, item 11): 30 Hz device stamps arriving every 4 ms, looping every 10 frames. The
    old rule re-anchored to the arrival time and stepped back by up to max_drift_s; stamps must increase strictly,
    keep the device spacing while they can, and stay within max_drift_s (+ one frame) of the clock."""
    mapper = HardwareClockMapper(ClockMappingConfig(max_drift_s=0.5))
    now = [1000.0 + 0.004 * i for i in range(600)]
    device = [(i % 10) / 30 for i in range(600)]
    stamps = np.array([mapper.to_ros(d, n) for d, n in zip(device, now)])
    assert np.diff(stamps).min() >= 1e-6 - 1e-9
    assert np.all(stamps - np.array(now) <= 0.5 + 1 / 30 + 1e-9)
    assert np.all(stamps >= np.array(now) - 1e-9)  # never published before it arrived (when it is re-anchored)
    # a slow consumer then a normal one: device spacing is kept again once the clock has caught up
    later = [mapper.to_ros(100.0 + i / 30, 1010.0 + i / 30 + 0.001 * (i % 3)) for i in range(5)]
    np.testing.assert_allclose(np.diff(later), 1 / 30, atol=1e-9)


def test_equal_device_stamps_are_nudged_not_repeated():
    mapper = HardwareClockMapper()
    a, b = mapper.to_ros(5.0, 100.0), mapper.to_ros(5.0, 100.01)
    assert b > a and b - a < 1e-5
