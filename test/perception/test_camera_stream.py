"""CameraStream never raises for bad input: it reports, retries and resumes with real sources and files."""

from __future__ import annotations

import time

import numpy as np

from gpc_ros.perception.camera_stream import CameraStream, CameraStreamConfig, default_source_factory
from gpc_ros.perception.frames import CameraIntrinsics, FrameSource
from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig

K = CameraIntrinsics(16, 12, 15.0, 15.0, 7.5, 5.5)


def record(path, frames: int = 3) -> None:
    with RealSenseRecorder(RecordingConfig(path, K)) as recorder:
        for i in range(frames):
            recorder.write(np.full((12, 16), 0.5 + i * 0.1, np.float32), np.zeros((12, 16, 3), np.uint8), 2.0 + i / 30)


def test_missing_recording_reports_then_opens_once_it_exists(tmp_path):
    path = tmp_path / "later.db3"
    config = CameraStreamConfig(source="playback", recording_path=str(path), playback_pace_realtime=False,
                                reopen_period_s=1.0)
    stream = CameraStream(config)
    assert stream.poll(lambda: 10.0) is None
    health = stream.health(10.0)
    assert health.level == "ERROR" and "does not exist" in health.message and str(path) in health.message
    record(path)
    assert stream.poll(lambda: 10.5) is None  # not retried before reopen_period_s
    frames = [stream.poll(lambda i=i: 11.0 + i * 0.01) for i in range(20)]
    frames = [f for f in frames if f is not None]
    assert [f.frame.frame_number for f in frames] == [0, 1, 2]
    assert frames[0].ros_stamp_s == 11.0  # offset fixed at the first frame
    np.testing.assert_allclose([f.ros_stamp_s - frames[0].ros_stamp_s for f in frames], [0, 1 / 30, 2 / 30])
    assert stream.health(11.5).level == "WARN"  # recording finished
    stream.close()


def test_no_camera_with_serial_stays_in_error_without_raising():
    stream = CameraStream(CameraStreamConfig(source="realsense", serial="123456789012"))
    for now in (0.0, 5.0):
        assert stream.poll(lambda: now) is None
    health = stream.health(5.0)
    assert health.level == "ERROR" and "123456789012" in health.message
    stream.close()


def test_stale_when_no_frames_arrive(tmp_path):
    path = tmp_path / "one.db3"
    record(path, frames=1)
    config = CameraStreamConfig(source="playback", recording_path=str(path), playback_pace_realtime=False,
                                playback_loop=True, frame_timeout_s=0.5)
    stream = CameraStream(config)
    stamped = None
    while stamped is None:
        stamped = stream.poll(lambda: 1.0)
    assert stream.health(1.2).level == "OK"
    health = stream.health(3.0)  # nothing polled for 2 s (a stalled consumer or camera)
    assert health.level == "WARN" and "no frame" in health.message
    assert any(stream.poll(lambda: 3.0) is not None for _ in range(100))  # looped recording keeps delivering
    assert stream.health(3.1).level == "OK"
    stream.close()


class GoesSilent(FrameSource):
    """A real PlaybackSource that stops delivering after ``frames`` frames until it is opened again (an unplug)."""

    def __init__(self, inner: FrameSource, frames: int, opened: list) -> None:
        self.inner, self.frames, self.opened = inner, frames, opened

    def start(self) -> None:
        self.inner.start()
        self.opened.append(self)
        self.delivered = 0

    def read(self, timeout_s: float):
        if self.delivered >= self.frames:
            time.sleep(timeout_s)
            return None
        frame = self.inner.read(timeout_s)
        self.delivered += frame is not None
        return frame

    def stop(self) -> None:
        self.inner.stop()


def test_silent_source_is_reopened_and_frames_resume(tmp_path):
    path = tmp_path / "loop.db3"
    record(path)
    config = CameraStreamConfig(source="playback", recording_path=str(path), playback_pace_realtime=False,
                                playback_loop=True, frame_timeout_s=0.2, reopen_period_s=0.3)
    opened: list = []
    stream = CameraStream(config, lambda c: GoesSilent(default_source_factory(c), 2, opened), poll_timeout_s=0.05)
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    got, levels = [], []
    for _ in range(40):  # 40 polls, 0.1 s of ROS time each
        stamped = stream.poll(clock)
        if stamped is not None:
            got.append(stamped.frame.frame_number)
        if len(opened) == 1 and len(got) == 2:
            levels.append(stream.health(now[0]).level)
        now[0] += 0.1
    assert levels[0] == "OK" and "WARN" in levels  # silent for longer than frame_timeout_s: stale
    assert len(opened) >= 2  # reopened after frame_timeout_s + reopen_period_s of silence
    assert got[:4] == [0, 1, 0, 1]  # and delivering again from the reopened source
    stream.close()


def test_stamps_strictly_increase_across_loops_of_unpaced_playback(tmp_path, caplog):
    """A 10-frame file played unpaced and looped: device stamps run ahead of the clock and jump back at every loop;
    the published stamps must still increase strictly (issue 10, item 11), with few INFO lines."""
    import logging

    path = tmp_path / "ten.db3"
    record(path, frames=10)
    config = CameraStreamConfig(source="playback", recording_path=str(path), playback_pace_realtime=False,
                                playback_loop=True)
    stream = CameraStream(config)
    stamps, deadline = [], time.monotonic() + 120.0
    with caplog.at_level(logging.INFO, logger="gpc_ros.perception"):
        while len(stamps) < 45 and time.monotonic() < deadline:
            stamped = stream.poll(time.time)
            if stamped is not None:
                stamps.append(stamped.ros_stamp_s)
    stream.close()
    assert len(stamps) == 45, len(stamps)  # 4.5 loops
    steps = np.diff(stamps)
    assert steps.min() > 0, steps.min()
    re_anchor_lines = [r for r in caplog.records if "re-anchoring" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(re_anchor_lines) <= 1
