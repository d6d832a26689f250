"""The real pyrealsense2 software device + recorder writes files that the real playback device reads back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.perception.frames import CameraIntrinsics, CameraNotFoundError, RecordingError
from gpc_ros.perception.playback_source import PlaybackConfig, PlaybackSource
from gpc_ros.perception.realsense_source import RealSenseConfig, RealSenseSource
from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig
from gpc_ros.perception.synthetic_scene import look_at, render_depth

K = CameraIntrinsics(32, 24, 30.0, 31.0, 15.5, 11.5)


def play_all(path, **kwargs) -> list:
    frames = []
    with PlaybackSource(PlaybackConfig(path, pace_realtime=False, **kwargs)) as source:
        while not source.ended and len(frames) < 50:
            frame = source.read(2.0)
            if frame is not None:
                frames.append(frame)
    return frames


def test_recording_plays_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    depths = [rng.integers(0, 4000, (24, 32)).astype(np.float32) / 1000 for _ in range(4)]
    colors = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
    path = tmp_path / "random.db3"
    with RealSenseRecorder(RecordingConfig(path, K, serial="817612070123", fps=30)) as recorder:
        for i in range(4):
            recorder.write(depths[i], colors[i], 100.0 + i / 30)
    frames = play_all(path)
    assert [f.frame_number for f in frames] == [0, 1, 2, 3]
    for i, frame in enumerate(frames):
        assert frame.serial == "817612070123"
        assert frame.intrinsics == K
        assert frame.stamp_s == pytest.approx(100.0 + i / 30, abs=1e-6)
        np.testing.assert_array_equal(np.rint(frame.depth_m * 1000), np.rint(depths[i] * 1000))
        np.testing.assert_array_equal(frame.color_rgb, colors[i])


def test_depth_only_recording_and_depth_scale(tmp_path):
    path = tmp_path / "depth_only.db3"
    depth = np.full((24, 32), 0.75, np.float32)
    config = RecordingConfig(path, K, with_color=False, depth_units_m=0.0001)
    with RealSenseRecorder(config) as recorder:
        for i in range(2):
            recorder.write(depth, None, 1.0 + i / 30)
    frames = play_all(path)
    assert len(frames) == 2
    assert frames[0].color_rgb is None
    np.testing.assert_allclose(frames[0].depth_m, 0.75, atol=1e-4)


def test_unaligned_depth_is_aligned_to_colour(tmp_path):
    """Depth recorded by a second, shifted camera model: playback re-projects it into the colour camera."""
    color_k = CameraIntrinsics(40, 30, 36.0, 36.0, 19.5, 14.5)
    depth_k = CameraIntrinsics(32, 24, 30.0, 30.0, 15.5, 11.5)
    depth_to_color = np.eye(4)
    depth_to_color[0, 3] = -0.015  # a D435's colour imager sits ~15 mm beside the depth origin
    wall_m = 0.9  # fronto-parallel wall: its depth is the same in both cameras
    path = tmp_path / "unaligned.db3"
    with RealSenseRecorder(RecordingConfig(path, color_k, depth_k, depth_to_color)) as recorder:
        recorder.write(np.full((24, 32), wall_m, np.float32), np.zeros((30, 40, 3), np.uint8), 0.5)
    (frame,) = play_all(path)
    assert frame.depth_m.shape == (30, 40)
    valid = frame.depth_m > 0
    assert valid.mean() > 0.5
    np.testing.assert_allclose(frame.depth_m[valid], wall_m, atol=1e-3)


def test_playback_loops(tmp_path):
    path = tmp_path / "loop.db3"
    with RealSenseRecorder(RecordingConfig(path, K)) as recorder:
        for i in range(2):
            recorder.write(np.full((24, 32), 1.0, np.float32), np.zeros((24, 32, 3), np.uint8), i / 30)
    frames = []
    with PlaybackSource(PlaybackConfig(path, loop=True, pace_realtime=False)) as source:
        while len(frames) < 5:
            frame = source.read(2.0)
            assert frame is not None
            frames.append(frame.frame_number)
        assert not source.ended
    assert frames == [0, 1, 0, 1, 0]


def test_scene_recording_matches_rendering(tmp_path):
    pose = look_at([0.9, 0.0, 0.5], [0.5, 0.0, 0.0])
    depth, color = render_depth(K, pose)
    path = tmp_path / "scene.db3"
    with RealSenseRecorder(RecordingConfig(path, K)) as recorder:
        recorder.write(depth, color, 0.0)
    (frame,) = play_all(path)
    np.testing.assert_allclose(frame.depth_m, depth, atol=0.0006)  # 1 mm depth units, rounded


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecordingError, match="does not exist"):
        PlaybackSource(PlaybackConfig(tmp_path / "nope.db3")).start()


@pytest.mark.parametrize("name, content", [("notes.txt", b"hello"), ("garbage.db3", b"not sqlite at all" * 100),
                                           ("garbage.bag", b"\x00" * 64)])
def test_non_realsense_file_is_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    source = PlaybackSource(PlaybackConfig(path))
    with pytest.raises(RecordingError, match="not a (readable )?RealSense recording"):
        source.start()
    source.stop()


def test_no_camera_with_serial_is_a_clear_error():
    source = RealSenseSource(RealSenseConfig("000000000001"))
    with pytest.raises(CameraNotFoundError, match="000000000001"):
        source.start()
    source.stop()


@pytest.mark.parametrize("name", ["empty.db3", "empty.bag"])
def test_empty_recording_says_it_is_empty(tmp_path, name):
    """Not sqlite's 'SQL logic error' (issue 10, item 12)."""
    path = tmp_path / name
    path.touch()
    with pytest.raises(RecordingError, match=r"is empty \(0 bytes\)") as err:
        PlaybackSource(PlaybackConfig(path)).start()
    assert str(path) in str(err.value)
