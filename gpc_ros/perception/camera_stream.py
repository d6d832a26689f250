"""One camera's stream as the camera node runs it: open the configured source, retry, stamp, report health.

:class:`CameraStream` owns a :class:`~gpc_ros.perception.frames.FrameSource` (RealSense by serial, a recording,
or anything a ``source_factory`` builds, e.g. the simulation renderer), maps device timestamps to ROS time
(:mod:`gpc_ros.perception.timestamps`) and never raises on bad input: a source that cannot be opened is retried
every ``reopen_period_s`` with a clear log line, a camera that stops delivering is reported as stale and resumes
by itself; a source silent for ``frame_timeout_s + reopen_period_s`` is closed and opened again (a replugged
camera's pipeline does not recover on its own). :meth:`CameraStream.health` summarises this for ``/diagnostics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpc_ros.perception.frames import FrameSource, FrameSourceError, RgbdFrame
from gpc_ros.perception.timestamps import ClockMappingConfig, HardwareClockMapper

logger = logging.getLogger(__name__)

SOURCES = ("realsense", "playback", "sim")
HEALTH_LEVELS = ("OK", "WARN", "ERROR")


@dataclass(frozen=True)
class CameraStreamConfig:
    """One camera (``camera_node`` parameters map 1:1 onto these fields).

    Attributes:
        camera_name: topics go under ``/camera/<camera_name>/``, frames are ``<camera_name>_color_optical_frame``.
        source: "realsense" (a connected camera, by ``serial``), "playback" (``recording_path``) or "sim" (camera
            ``camera_name`` = front | wrist of the simulated cell served on ``sim_host``, docs/sim.md).
        serial: RealSense serial number (source "realsense").
        recording_path: ``.db3`` / ``.bag`` file (source "playback").
        width, height: stream resolution (px) of a live camera.
        fps: frame rate (Hz) of a live camera.
        playback_loop: start a recording again after its last frame.
        playback_pace_realtime: play a recording at its recorded rate (else as fast as it is read).
        depth_encoding: published depth: "16UC1" (mm, 0 = no data) or "32FC1" (m, NaN = no data).
        frame_timeout_s: no frame for this long -> reported stale (WARN) (s).
        reopen_period_s: a source that failed to open is retried this often (s).
        max_clock_drift_s: re-anchor device -> ROS timestamps beyond this drift (s).
        sim_host: loopback address of the served simulated cell (source "sim").
    """

    camera_name: str = "camera"
    source: str = "realsense"
    serial: str = ""
    recording_path: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    playback_loop: bool = False
    playback_pace_realtime: bool = True
    depth_encoding: str = "16UC1"
    frame_timeout_s: float = 1.0
    reopen_period_s: float = 2.0
    max_clock_drift_s: float = 0.5
    sim_host: str = "127.0.0.2"

    def __post_init__(self) -> None:
        if not self.camera_name or not self.camera_name.replace("_", "").isalnum():
            raise ValueError(
                f"CameraStreamConfig.camera_name must be letters, digits and '_' (a ROS name), got {self.camera_name!r}"
            )
        if self.source not in SOURCES:
            raise ValueError(f"CameraStreamConfig.source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "realsense" and not self.serial.strip():
            raise ValueError("CameraStreamConfig.serial must be set when source is 'realsense', got ''")
        if self.source == "playback" and not self.recording_path:
            raise ValueError("CameraStreamConfig.recording_path must be set when source is 'playback', got ''")
        if self.source == "sim":
            self.sim_config()  # validates camera name and size early
        if self.depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(
                f"CameraStreamConfig.depth_encoding must be one of ('16UC1', '32FC1'), got {self.depth_encoding!r}"
            )
        for name in ("frame_timeout_s", "reopen_period_s", "max_clock_drift_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CameraStreamConfig.{name} must be > 0 s, got {getattr(self, name)!r}")
        if self.source == "realsense":
            self.realsense_config()  # validates width/height/fps early

    @property
    def color_frame_id(self) -> str:
        """REP-105 optical frame of the colour image and of the depth aligned to it."""
        return f"{self.camera_name}_color_optical_frame"

    def realsense_config(self):
        """The :class:`RealSenseConfig` of this camera (validates width, height, fps)."""
        from gpc_ros.perception.realsense_source import RealSenseConfig

        return RealSenseConfig(self.serial, self.width, self.height, self.fps)

    def sim_config(self):
        """The :class:`~gpc_ros.sim.cameras.SimCameraConfig` of this camera (source "sim")."""
        from gpc_ros.sim.cameras import SimCameraConfig

        return SimCameraConfig(self.sim_host, self.camera_name, self.width, self.height, float(self.fps))

    def playback_config(self):
        """The :class:`PlaybackConfig` of this camera."""
        from gpc_ros.perception.playback_source import PlaybackConfig

        return PlaybackConfig(Path(self.recording_path).expanduser(), self.playback_loop, self.playback_pace_realtime)


def default_source_factory(config: CameraStreamConfig) -> FrameSource:
    """The source named by ``config.source``."""
    if config.source == "sim":
        from gpc_ros.sim.cameras import SimFrameSource

        return SimFrameSource(config.sim_config())
    if config.source == "realsense":
        from gpc_ros.perception.realsense_source import RealSenseSource

        return RealSenseSource(config.realsense_config())
    from gpc_ros.perception.playback_source import PlaybackSource

    return PlaybackSource(config.playback_config())


@dataclass(frozen=True)
class StampedFrame:
    """A frame with its capture time on the ROS clock (s)."""

    frame: RgbdFrame
    ros_stamp_s: float


@dataclass(frozen=True)
class StreamHealth:
    """For ``/diagnostics``: level one of HEALTH_LEVELS, a one-line message and key/value details."""

    level: str
    message: str
    values: dict[str, str]


class CameraStream:
    """``stream.poll(clock)`` -> the next :class:`StampedFrame` or None; ``stream.health(ros_now_s)``.

    ``clock`` returns the ROS time now (s); it is read when a frame arrives, so the stamp mapping uses the
    arrival time and not the time the wait began.
    """

    def __init__(
        self,
        config: CameraStreamConfig,
        source_factory: Callable[[CameraStreamConfig], FrameSource] = default_source_factory,
        poll_timeout_s: float = 0.1,
    ) -> None:
        self.config = config
        self._factory = source_factory
        self._poll_timeout_s = poll_timeout_s
        self._source: FrameSource | None = None
        self._clock = HardwareClockMapper(ClockMappingConfig(config.max_clock_drift_s))
        self._last_error = ""
        self._next_open_s: float | None = None
        self._last_frame_s: float | None = None
        self._opened_s: float | None = None
        self._ended = False
        self.frames = 0

    def _try_open(self, ros_now_s: float) -> None:
        if self._next_open_s is not None and ros_now_s < self._next_open_s:
            return
        source = self._factory(self.config)
        try:
            source.start()
        except FrameSourceError as exc:
            self._next_open_s = ros_now_s + self.config.reopen_period_s
            if str(exc) != self._last_error:
                logger.error("camera %s: %s (retrying every %.1f s)", self.config.camera_name, exc,
                          self.config.reopen_period_s)
            self._last_error = str(exc)
            source.stop()
            return
        if self._last_error:
            logger.info("camera %s: source opened after earlier failure", self.config.camera_name)
        self._last_error = ""
        self._source = source
        self._opened_s = ros_now_s

    def poll(self, clock: Callable[[], float]) -> StampedFrame | None:
        """Wait up to ``poll_timeout_s`` for the next frame; never raises for a failing source."""
        ros_now_s = clock()
        if self._ended:
            return None
        if self._source is None:
            self._try_open(ros_now_s)
            if self._source is None:
                return None
        try:
            frame = self._source.read(self._poll_timeout_s)
        except FrameSourceError as exc:
            logger.error("camera %s: source failed while streaming: %s; reopening", self.config.camera_name, exc)
            self._last_error = str(exc)
            self._source.stop()
            self._source = None
            self._next_open_s = ros_now_s + self.config.reopen_period_s
            return None
        if frame is None:
            if self._source.ended:
                self._ended = True
                logger.info("camera %s: recording finished, no more frames", self.config.camera_name)
                return None
            silent_s = clock() - max(self._last_frame_s or self._opened_s, self._opened_s)
            if silent_s > self.config.frame_timeout_s + self.config.reopen_period_s:
                # e.g. a camera unplugged and plugged back: its pipeline does not recover by itself
                self._last_error = f"no frame for {silent_s:.1f} s; reopening the source"
                logger.warning("camera %s: %s", self.config.camera_name, self._last_error)
                self._source.stop()
                self._source = None
                self._next_open_s = None
            return None
        ros_now_s = clock()  # arrival time of this frame
        if self._last_frame_s is not None and ros_now_s - self._last_frame_s > self.config.frame_timeout_s:
            logger.info("camera %s: frames resumed after %.1f s", self.config.camera_name,
                        ros_now_s - self._last_frame_s)
        self._last_frame_s = ros_now_s
        self.frames += 1
        return StampedFrame(frame, self._clock.to_ros(frame.stamp_s, ros_now_s))

    def health(self, ros_now_s: float) -> StreamHealth:
        """Level, message and details of the stream at ROS time ``ros_now_s`` (s)."""
        values = {"source": self.config.source, "frames": str(self.frames)}
        if self.config.source == "realsense":
            values["serial"] = self.config.serial
        elif self.config.source == "sim":
            values["sim_host"] = self.config.sim_host
        else:
            values["recording_path"] = self.config.recording_path
        if self._source is None and not self._ended:
            return StreamHealth("ERROR", f"source not open: {self._last_error or 'not started yet'}", values)
        if self._ended:
            return StreamHealth("WARN", "recording finished: no more frames", values)
        since = ros_now_s - (self._last_frame_s if self._last_frame_s is not None else self._opened_s)
        values["seconds_since_last_frame"] = f"{since:.2f}"
        if since > self.config.frame_timeout_s:
            return StreamHealth("WARN", f"no frame for {since:.1f} s (camera stopped delivering?)", values)
        return StreamHealth("OK", "streaming", values)

    def close(self) -> None:
        """Stop the source (if open)."""
        if self._source is not None:
            self._source.stop()
            self._source = None
