"""Write RealSense-format recordings (``.db3`` rosbag2 with pyrealsense2 >= 2.58) from numpy arrays.

Tests and users produce playback files from simulation or from arrays with the same software device + recorder that
pyrealsense2 uses for real cameras, so :class:`gpc_ros.perception.playback_source.PlaybackSource` (and the
RealSense Viewer) read them like a recording of a device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics

logger = logging.getLogger(__name__)

#: The only recording format written by pyrealsense2 2.58+ (older versions wrote ROS 1 ``.bag``).
RECORDING_SUFFIX = ".db3"


@dataclass(frozen=True)
class RecordingConfig:
    """What a software-device recording contains.

    Attributes:
        path: output file; must end in ``.db3``.
        color_intrinsics: pinhole model of the colour stream (px).
        depth_intrinsics: pinhole model of the depth stream; None = same as colour (depth already aligned).
        depth_to_color: (4, 4) rigid transform from the depth to the colour optical frame (m); None = identity.
        fps: nominal frame rate (Hz) written into the stream profiles.
        depth_units_m: metres per depth count (0.001 = millimetres, the RealSense D400 default).
        serial: serial number the recorded device reports.
        with_color: record a colour stream besides depth.
        compress: let the recorder compress images (lossless but ~100 ms per 640x480 frame on this CPU; off by
            default: files are larger, recording and playback are fast).
    """

    path: Path
    color_intrinsics: CameraIntrinsics
    depth_intrinsics: CameraIntrinsics | None = None
    depth_to_color: np.ndarray | None = field(default=None, repr=False)
    fps: int = 30
    depth_units_m: float = 0.001
    serial: str = "000000000000"
    with_color: bool = True
    compress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.path.suffix != RECORDING_SUFFIX:
            raise ValueError(f"RecordingConfig.path must end in {RECORDING_SUFFIX!r}, got {str(self.path)!r}")
        if not 1 <= int(self.fps) <= 300:
            raise ValueError(f"RecordingConfig.fps must be in 1..300 Hz, got {self.fps!r}")
        if not 0 < self.depth_units_m <= 0.01:
            raise ValueError(f"RecordingConfig.depth_units_m must be in (0, 0.01] m, got {self.depth_units_m!r}")
        if self.depth_to_color is not None and np.asarray(self.depth_to_color).shape != (4, 4):
            raise ValueError(
                f"RecordingConfig.depth_to_color must be a (4, 4) transform or None, got shape "
                f"{np.asarray(self.depth_to_color).shape}"
            )
        if not self.serial:
            raise ValueError("RecordingConfig.serial must be a non-empty string, got ''")


def _rs_intrinsics(rs, intr: CameraIntrinsics):
    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.cx, intr.cy
    out.model = rs.distortion.none
    out.coeffs = [0.0] * 5
    return out


class RealSenseRecorder:
    """Writes frames into a RealSense recording: ``with RealSenseRecorder(cfg) as rec: rec.write(depth_m, rgb, t)``.

    The file is complete when the recorder is closed (``close()`` or leaving the ``with`` block).
    """

    def __init__(self, config: RecordingConfig) -> None:
        self.config = config
        self._frame_number = 0
        self._open = False

    def __enter__(self) -> RealSenseRecorder:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the software device and start recording to ``config.path``."""
        import pyrealsense2 as rs

        cfg = self.config
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        depth_intr = cfg.depth_intrinsics or cfg.color_intrinsics
        self._device = rs.software_device()
        self._device.register_info(rs.camera_info.serial_number, cfg.serial)
        self._device.register_info(rs.camera_info.name, "gpc_ros software camera")
        self._depth_sensor = self._device.add_sensor("Stereo Module")
        self._depth_profile = self._depth_sensor.add_video_stream(
            self._stream(rs, rs.stream.depth, rs.format.z16, 2, 0, depth_intr)
        )
        self._depth_sensor.add_read_only_option(rs.option.depth_units, float(cfg.depth_units_m))
        sensors = [(self._depth_sensor, self._depth_profile)]
        if cfg.with_color:
            self._color_sensor = self._device.add_sensor("RGB Camera")
            self._color_profile = self._color_sensor.add_video_stream(
                self._stream(rs, rs.stream.color, rs.format.rgb8, 3, 1, cfg.color_intrinsics)
            )
            extr = rs.extrinsics()
            transform = np.eye(4) if cfg.depth_to_color is None else np.asarray(cfg.depth_to_color, float)
            extr.rotation = [float(v) for v in transform[:3, :3].T.ravel()]  # librealsense: column-major
            extr.translation = [float(v) for v in transform[:3, 3]]
            self._depth_profile.register_extrinsics_to(self._color_profile, extr)
            sensors.append((self._color_sensor, self._color_profile))
        self._device.create_matcher(rs.matchers.default)
        self._recorder = rs.recorder(str(cfg.path), self._device, bool(cfg.compress))
        self._sink = rs.frame_queue(4)
        for sensor, profile in sensors:
            sensor.open(profile)
        for sensor, _ in sensors:
            sensor.start(self._sink)
        self._sensors = sensors
        self._open = True
        logger.info("recording %s (serial %s) to %s", "depth+colour" if cfg.with_color else "depth", cfg.serial,
                    cfg.path)

    def _stream(self, rs, kind, fmt, bpp: int, uid: int, intr: CameraIntrinsics):
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps = intr.width, intr.height, int(self.config.fps)
        stream.bpp, stream.fmt = bpp, fmt
        stream.intrinsics = _rs_intrinsics(rs, intr)
        return stream

    def write(self, depth_m: np.ndarray, color_rgb: np.ndarray | None, stamp_s: float) -> None:
        """Append one frame.

        Args:
            depth_m: (H, W) depth (m, 0 = no data) in the depth stream's resolution; stored as counts of
                ``depth_units_m`` (rounded, clipped to 0..65535).
            color_rgb: (H, W, 3) uint8 in the colour resolution (required iff ``with_color``).
            stamp_s: device capture time (s), increasing.
        """
        import pyrealsense2 as rs

        if not self._open:
            raise RuntimeError("RealSenseRecorder.write called before open() or after close()")
        cfg = self.config
        depth_intr = cfg.depth_intrinsics or cfg.color_intrinsics
        depth_m = np.asarray(depth_m)
        if depth_m.shape != (depth_intr.height, depth_intr.width):
            raise ValueError(f"depth_m must have shape {(depth_intr.height, depth_intr.width)}, got {depth_m.shape}")
        counts = np.clip(np.rint(np.nan_to_num(depth_m, nan=0.0) / cfg.depth_units_m), 0, 65535).astype(np.uint16)
        self._push(rs, self._depth_sensor, self._depth_profile, np.ascontiguousarray(counts), 2, stamp_s, depth=True)
        if cfg.with_color:
            shape = (cfg.color_intrinsics.height, cfg.color_intrinsics.width, 3)
            if color_rgb is None or color_rgb.shape != shape or color_rgb.dtype != np.uint8:
                got = None if color_rgb is None else (color_rgb.dtype, color_rgb.shape)
                raise ValueError(f"color_rgb must be uint8 {shape}, got {got}")
            self._push(rs, self._color_sensor, self._color_profile, np.ascontiguousarray(color_rgb), 3, stamp_s)
        self._frame_number += 1

    def _push(self, rs, sensor, profile, pixels: np.ndarray, bpp: int, stamp_s: float, depth: bool = False) -> None:
        frame = rs.software_video_frame()
        frame.pixels = pixels
        frame.stride = pixels.shape[1] * bpp
        frame.bpp = bpp
        frame.timestamp = float(stamp_s) * 1000.0  # librealsense timestamps are in ms
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = self._frame_number
        frame.profile = profile.as_video_stream_profile()
        if depth:
            frame.depth_units = float(self.config.depth_units_m)
        sensor.on_video_frame(frame)

    @property
    def frames_written(self) -> int:
        """Frames written so far."""
        return self._frame_number

    def close(self) -> None:
        """Stop the sensors and finish the file (idempotent)."""
        if not self._open:
            return
        self._open = False
        for sensor, _ in self._sensors:
            sensor.stop()
        for sensor, _ in self._sensors:
            sensor.close()
        del self._recorder  # the file is finalised when the recorder is destroyed
        self._sensors = []
        logger.info("wrote %d frames to %s", self._frame_number, self.config.path)
