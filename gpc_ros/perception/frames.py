"""The values produced by every RGB-D frame source, and the frame-source contract.

A source (live RealSense camera, recorded file, simulation renderer) yields :class:`RgbdFrame` values whose depth
is already aligned to the colour image, so one pinhole model (``intrinsics``) describes both.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import TracebackType

import numpy as np


class FrameSourceError(RuntimeError):
    """A frame source cannot be opened or has failed (message says what, where and what to do)."""


class CameraNotFoundError(FrameSourceError):
    """No connected camera has the configured serial number."""


class RecordingError(FrameSourceError):
    """A recording file does not exist, is not a RealSense recording or lacks the needed streams."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole model of an image (pixels). Distortion is not modelled (aligned RealSense depth has none).

    Attributes:
        width, height: image size (px).
        fx, fy: focal lengths (px).
        cx, cy: principal point (px), pixel centres at integer coordinates.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(f"CameraIntrinsics.{name} must be a positive integer (px), got {value!r}")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"CameraIntrinsics.{name} must be a positive finite focal length (px), got {value!r}")
        for name in ("cx", "cy"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"CameraIntrinsics.{name} must be finite (px), got {getattr(self, name)!r}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class RgbdFrame:
    """One colour + aligned depth pair from one camera.

    Attributes:
        depth_m: (H, W) float32 depth along the optical axis (m) in the colour camera's optical frame; 0 = no data.
        color_rgb: (H, W, 3) uint8 RGB, or None for a depth-only source.
        intrinsics: pinhole model of both images (depth is aligned to colour).
        stamp_s: capture time on the device's own clock (s); map it to ROS time with
            :class:`gpc_ros.perception.timestamps.HardwareClockMapper`.
        frame_number: the device's frame counter (monotonic per stream).
        serial: serial number of the device (or of the recorded device).
    """

    depth_m: np.ndarray
    color_rgb: np.ndarray | None
    intrinsics: CameraIntrinsics
    stamp_s: float
    frame_number: int
    serial: str

    def __post_init__(self) -> None:
        shape = (self.intrinsics.height, self.intrinsics.width)
        if self.depth_m.shape != shape or self.depth_m.dtype != np.float32:
            raise ValueError(
                f"RgbdFrame.depth_m must be float32 {shape}, got {self.depth_m.dtype} {self.depth_m.shape}"
            )
        if self.color_rgb is not None and (self.color_rgb.shape != (*shape, 3) or self.color_rgb.dtype != np.uint8):
            raise ValueError(
                f"RgbdFrame.color_rgb must be uint8 {(*shape, 3)} or None, got {self.color_rgb.dtype} "
                f"{self.color_rgb.shape}"
            )


class FrameSource(abc.ABC):
    """Contract of every RGB-D source: a context manager that yields aligned frames.

    ``start()`` opens the device or file (raising :class:`FrameSourceError` with a clear message on failure),
    ``read(timeout_s)`` returns the next frame or None if none arrived within ``timeout_s`` (a camera that stopped
    delivering; the caller keeps calling and the source resumes when frames come back), ``ended`` is True once a
    finite source (a recording played without looping) has delivered its last frame, ``stop()`` releases it.
    """

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Open the device or file; raises FrameSourceError if it cannot."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> RgbdFrame | None:
        """The next frame, or None if no frame arrived within ``timeout_s`` (s) or the source has ended."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release the device or file (idempotent)."""

    @property
    def ended(self) -> bool:
        """True once a finite source has delivered its last frame (live cameras never end)."""
        return False
