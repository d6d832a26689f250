"""Play a recorded RealSense file (``.db3`` from pyrealsense2 >= 2.58, ``.bag`` from older versions).

The file is opened as a pyrealsense2 playback device (``rs.context().load_device``, the device behind
``config.enable_device_from_file``) with ``set_real_time(False)``, and its depth and colour sensors stream into a
bounded queue whose blocking put holds the file reader back: no frame is ever dropped, even with a slow consumer.
We stream the sensors ourselves instead of through ``rs.pipeline``: measured with pyrealsense2 2.59.1, the
pipeline's one-slot frame queue drops framesets at random in non-real-time playback (of 5 recorded frames, runs
returned 8, 7 or 1 framesets), which makes the output of a recording depend on thread timing.

Depth and colour frames are paired by timestamp (equal within half a frame period); unaligned depth is aligned to
colour with :func:`gpc_ros.perception.alignment.align_depth_to_color`. With ``pace_realtime`` the source delivers
frames at their recorded intervals, as a camera would, and like a camera drops frames its consumer is too slow
for; without it, every frame is delivered as fast as it is read.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpc_ros.perception.alignment import align_depth_to_color
from gpc_ros.perception.frames import CameraIntrinsics, FrameSource, RecordingError, RgbdFrame

logger = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".db3", ".bag")
_COLOR_FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8")


@dataclass(frozen=True)
class PlaybackConfig:
    """A recording to play.

    Attributes:
        path: the recording (``.db3`` or ``.bag``; checked when the source starts, so a bad path is a runtime
            error the camera node reports and retries, not a crash).
        loop: start again from the beginning after the last frame (otherwise the source ends).
        pace_realtime: deliver frames at their recorded intervals (True, like a camera) or as fast as read (False).
        queue_frames: frames buffered between the file reader and ``read()`` (>= 2).
    """

    path: Path
    loop: bool = False
    pace_realtime: bool = True
    queue_frames: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if int(self.queue_frames) < 2:
            raise ValueError(f"PlaybackConfig.queue_frames must be >= 2, got {self.queue_frames!r}")


def intrinsics_from_rs(intr) -> CameraIntrinsics:
    """A :class:`CameraIntrinsics` from ``rs.intrinsics`` (distortion dropped)."""
    return CameraIntrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy)


def transform_from_rs(extr) -> np.ndarray:
    """(4, 4) transform from ``rs.extrinsics`` (rotation stored column-major by librealsense)."""
    transform = np.eye(4)
    transform[:3, :3] = np.asarray(extr.rotation, float).reshape(3, 3).T
    transform[:3, 3] = extr.translation
    return transform


def color_to_rgb(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a colour frame's pixels in ``fmt`` (one of rgb8, bgr8, rgba8, bgra8)."""
    if fmt == "rgb8":
        return pixels
    if fmt == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if fmt == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    return np.ascontiguousarray(pixels[..., 2::-1])


class PlaybackSource(FrameSource):
    """A RealSense recording as a :class:`FrameSource`."""

    def __init__(self, config: PlaybackConfig) -> None:
        self.config = config
        self._queue: queue.Queue = queue.Queue(maxsize=int(config.queue_frames))
        self._stopping = threading.Event()
        self._sensors: list = []
        self._ended = False
        self._device = None
        self._loops = 0
        self.dropped = 0  #: frames dropped by real-time pacing because the consumer was too slow

    # --- opening --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the recording and start streaming; :class:`RecordingError` names what is wrong."""
        import pyrealsense2 as rs

        path = self.config.path
        if not path.is_file():
            raise RecordingError(f"recording {str(path)!r} does not exist; check the camera's recording_path")
        if path.stat().st_size == 0:
            raise RecordingError(f"recording {str(path)!r} is empty (0 bytes); it holds no frames to play")
        if path.suffix not in RECORDING_SUFFIXES:
            raise RecordingError(
                f"{str(path)!r} is not a RealSense recording (expected a file ending in "
                f"{' or '.join(RECORDING_SUFFIXES)})"
            )
        try:
            device = rs.context().load_device(str(path))
        except RuntimeError as exc:
            raise RecordingError(
                f"{str(path)!r} is not a readable RealSense recording ({exc}); record one with "
                "gpc_ros.perception.recorder or the RealSense Viewer"
            ) from exc
        playback = device.as_playback()
        playback.set_real_time(False)
        depth_profile, color_profile = self._pick_profiles(rs, device)
        if depth_profile is None:
            raise RecordingError(f"recording {str(path)!r} has no z16 depth stream; it cannot feed a point cloud")
        self._device = device
        self.serial = device.get_info(rs.camera_info.serial_number) if device.supports(
            rs.camera_info.serial_number) else path.stem
        self.depth_intrinsics = intrinsics_from_rs(depth_profile.as_video_stream_profile().get_intrinsics())
        self.depth_scale_m = self._depth_scale(rs, device)
        self.period_s = 1.0 / max(depth_profile.fps(), 1)
        if color_profile is not None:
            self.color_format = color_profile.format().name
            self.intrinsics = intrinsics_from_rs(color_profile.as_video_stream_profile().get_intrinsics())
            try:
                self.depth_to_color = transform_from_rs(depth_profile.get_extrinsics_to(color_profile))
            except RuntimeError:
                logger.warning("recording %s has no depth-to-colour extrinsic; assuming identity", path)
                self.depth_to_color = np.eye(4)
        else:
            self.color_format = None
            self.intrinsics = self.depth_intrinsics
            self.depth_to_color = np.eye(4)
        self._stopping.clear()
        self._ended = False
        self._pending: dict[str, tuple[float, int, np.ndarray]] = {}
        self._pace_origin: tuple[float, float] | None = None
        self._open_sensors()
        logger.log(
            logging.DEBUG if self._loops else logging.INFO, "playing %s (serial %s, depth %dx%d%s, %.0f Hz)", path,
            self.serial, self.depth_intrinsics.width, self.depth_intrinsics.height,
            "" if color_profile is None
            else f", colour {self.intrinsics.width}x{self.intrinsics.height} {self.color_format}",
            1.0 / self.period_s,
        )

    def _pick_profiles(self, rs, device):
        """The first z16 depth and the first RGB-like colour profile, remembering which sensor streams each."""
        depth = color = None
        self._profiles_by_sensor: list[tuple[object, list]] = []
        for sensor in device.query_sensors():
            wanted = []
            for profile in sensor.get_stream_profiles():
                if not profile.is_video_stream_profile():
                    continue
                kind, fmt = profile.stream_type(), profile.format().name
                if kind == rs.stream.depth and fmt == "z16" and depth is None:
                    depth = profile
                    wanted.append(profile)
                elif kind == rs.stream.color and fmt in _COLOR_FORMATS and color is None:
                    color = profile
                    wanted.append(profile)
            if wanted:
                self._profiles_by_sensor.append((sensor, wanted))
        return depth, color

    def _depth_scale(self, rs, device) -> float:
        for sensor in device.query_sensors():
            if sensor.is_depth_sensor():
                return float(sensor.as_depth_sensor().get_depth_scale())
        logger.warning("recording %s has no depth-units option; assuming 0.001 m per count", self.config.path)
        return 0.001

    def _open_sensors(self) -> None:
        self._sensors = []
        for sensor, profiles in self._profiles_by_sensor:
            sensor.open(profiles)
            self._sensors.append(sensor)
        # Paused while the sensors start, so no stream's first frames play before its sensor listens.
        playback = self._device.as_playback()
        playback.pause()
        for sensor in self._sensors:
            sensor.start(self._on_frame)
        playback.resume()

    def _on_frame(self, frame) -> None:
        """Librealsense thread: copy the pixels and hand them over; blocking here holds the file reader back."""
        kind = "depth" if frame.get_profile().stream_type().name == "depth" else "color"
        item = (kind, frame.get_timestamp() / 1000.0, frame.get_frame_number(), np.array(frame.get_data(), copy=True))
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- reading --------------------------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """True once a non-looping recording has delivered its last frame."""
        return self._ended

    def _reader_finished(self) -> bool:
        import pyrealsense2 as rs

        return self._device is None or self._device.as_playback().current_status() == rs.playback_status.stopped

    def read(self, timeout_s: float) -> RgbdFrame | None:
        """The next frame, or None after ``timeout_s`` (looping or ending at the file's end)."""
        deadline = time.monotonic() + timeout_s
        while not self._ended:
            try:
                kind, stamp_s, number, pixels = self._queue.get(timeout=min(0.05, max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                if self._queue.empty() and self._reader_finished():
                    if self.config.loop:
                        logger.debug("recording %s finished; looping", self.config.path)
                        self._rewind()
                        continue
                    self._ended = True
                    logger.info("recording %s finished", self.config.path)
                    return None
                if time.monotonic() >= deadline:
                    return None
                continue
            frame = self._pair(kind, stamp_s, number, pixels)
            if frame is not None and self._pace(frame.stamp_s):
                return frame
        return None

    def _rewind(self) -> None:
        """Play the already loaded file again from its start (no reload: the loop's gap is one sensor restart)."""
        self._loops += 1
        for sensor in self._sensors:
            try:
                sensor.stop()
            except RuntimeError as exc:  # already stopped at the end of the file
                logger.debug("stopping a playback sensor: %s", exc)
            sensor.close()
        self._sensors = []
        self._device.as_playback().seek(datetime.timedelta(0))
        self._pending = {}
        self._pace_origin = None
        self._open_sensors()

    def _pair(self, kind: str, stamp_s: float, number: int, pixels: np.ndarray) -> RgbdFrame | None:
        self._pending[kind] = (stamp_s, number, pixels)
        depth = self._pending.get("depth")
        color = self._pending.get("color") if self.color_format is not None else None
        if depth is None or (self.color_format is not None and color is None):
            return None
        if color is not None and abs(depth[0] - color[0]) > 0.5 * self.period_s:
            return None  # keep the newer of each until their partners arrive
        self._pending.clear()
        depth_m = depth[2].astype(np.float32) * np.float32(self.depth_scale_m)
        depth_m = align_depth_to_color(depth_m, self.depth_intrinsics, self.intrinsics, self.depth_to_color)
        rgb = None if color is None else color_to_rgb(color[2], self.color_format)
        return RgbdFrame(depth_m, rgb, self.intrinsics, depth[0], depth[1], self.serial)

    def _pace(self, stamp_s: float) -> bool:
        """With ``pace_realtime``: wait until the frame is due; False = drop it, it is over a period late.

        Like a camera whose consumer is slow, a paced recording drops late frames rather than falling behind
        (so published stamps stay close to the ROS clock); unpaced playback delivers every frame.
        """
        if not self.config.pace_realtime:
            return True
        now = time.monotonic()
        if self._pace_origin is None or stamp_s < self._pace_origin[1]:
            self._pace_origin = (now, stamp_s)
            return True
        delay = self._pace_origin[0] + (stamp_s - self._pace_origin[1]) - now
        if delay > 0:
            time.sleep(delay)
        elif delay < -self.period_s:
            self.dropped += 1
            logger.debug("playback %s: dropped a frame %.0f ms late", self.config.path, -delay * 1e3)
            return False
        return True

    # --- closing --------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop and close the sensors and drop queued frames."""
        self._stopping.set()
        for sensor in self._sensors:
            try:
                sensor.stop()
            except RuntimeError as exc:  # already stopped at the end of the file
                logger.debug("stopping a playback sensor: %s", exc)
        for sensor in self._sensors:
            try:
                sensor.close()
            except RuntimeError as exc:
                logger.debug("closing a playback sensor: %s", exc)
        self._sensors = []
        self._device = None
        while not self._queue.empty():
            self._queue.get_nowait()
