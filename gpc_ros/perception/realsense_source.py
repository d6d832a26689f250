"""A live Intel RealSense camera (D415/D435/L515) opened by serial number through ``rs.pipeline``.

Colour (rgb8) and depth (z16) at the configured resolution and rate; depth is aligned to colour with ``rs.align``
(~3 ms at 640x480), so the colour intrinsics describe both images. Frames carry the device's hardware timestamp.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gpc_ros.perception.frames import CameraNotFoundError, FrameSource, FrameSourceError, RgbdFrame
from gpc_ros.perception.playback_source import intrinsics_from_rs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealSenseConfig:
    """A live camera.

    Attributes:
        serial: the camera's serial number (printed on it; ``rs-enumerate-devices -s`` lists them); non-empty.
        width: stream width (px) for both colour and depth, e.g. 640 (640x480, 848x480, 1280x720).
        height: stream height (px), e.g. 480.
        fps: frame rate (Hz): 6, 15, 30, 60 or 90 (which ones a resolution supports depends on the model).
    """

    serial: str
    width: int = 640
    height: int = 480
    fps: int = 30

    def __post_init__(self) -> None:
        if not str(self.serial).strip():
            raise ValueError("RealSenseConfig.serial must be the camera's serial number, got ''")
        if not (16 <= int(self.width) <= 1920 and 16 <= int(self.height) <= 1080):
            raise ValueError(
                f"RealSenseConfig.width x height must be within 16..1920 x 16..1080 px, got {self.width}x{self.height}"
            )
        if int(self.fps) not in (6, 15, 30, 60, 90):
            raise ValueError(f"RealSenseConfig.fps must be one of 6, 15, 30, 60, 90 Hz, got {self.fps!r}")


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense devices connected now."""
    import pyrealsense2 as rs

    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class RealSenseSource(FrameSource):
    """A connected RealSense camera as a :class:`FrameSource`."""

    def __init__(self, config: RealSenseConfig) -> None:
        self.config = config
        self._pipeline = None

    def start(self) -> None:
        """Open the camera by serial and start streaming."""
        import pyrealsense2 as rs

        cfg = self.config
        serials = connected_serials()
        if cfg.serial not in serials:
            raise CameraNotFoundError(
                f"no RealSense camera with serial {cfg.serial!r} is connected (connected: {serials or 'none'}); "
                "check the USB 3 cable and the camera's serial parameter"
            )
        config = rs.config()
        config.enable_device(cfg.serial)
        config.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        config.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise FrameSourceError(
                f"RealSense {cfg.serial} cannot stream {cfg.width}x{cfg.height} at {cfg.fps} Hz ({exc}); "
                "choose a mode the model supports (rs-enumerate-devices)"
            ) from exc
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color)
        self.depth_scale_m = float(profile.get_device().first_depth_sensor().get_depth_scale())
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        self.intrinsics = intrinsics_from_rs(color.get_intrinsics())
        logger.info("RealSense %s streaming %dx%d at %d Hz", cfg.serial, cfg.width, cfg.height, cfg.fps)

    def read(self, timeout_s: float) -> RgbdFrame | None:
        """The next aligned frame, or None after ``timeout_s``."""
        if self._pipeline is None:
            raise FrameSourceError("RealSenseSource.read called before start()")
        ok, frames = self._pipeline.try_wait_for_frames(max(int(timeout_s * 1000), 1))
        if not ok:
            return None
        frames = self._align.process(frames)
        depth, color = frames.get_depth_frame(), frames.get_color_frame()
        if not depth or not color:
            return None
        depth_m = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(self.depth_scale_m)
        rgb = np.array(color.get_data(), copy=True)
        return RgbdFrame(depth_m, rgb, self.intrinsics, depth.get_timestamp() / 1000.0, depth.get_frame_number(),
                         self.config.serial)

    def stop(self) -> None:
        """Stop streaming."""
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            finally:
                self._pipeline = None
