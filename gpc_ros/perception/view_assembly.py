"""Assembling one cloud's inputs from per-camera image streams (ROS-free part of the point-cloud node).

Depth frames arrive per camera; colour frames (optional) arrive separately with the same stamp. A cloud is due
whenever the *first* camera of ``camera_to_base`` (the primary) delivers a depth frame: it is merged with the
latest depth frame of every other camera if that frame is at most ``max_skew_s`` older or newer; a camera without
such a frame is left out of that cloud (reported in :attr:`AssembledViews.missing`). With colour, the primary's
depth frame waits for its colour frame (same stamp; topics may be delivered in either order) and the cloud is due
when that arrives; a newer depth frame replaces a waiting one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import CameraView

#: Colour and depth of one frame carry the same stamp; this is how close "the same" must be (s).
STAMP_MATCH_S = 1e-3


@dataclass(frozen=True)
class AssembledViews:
    """The views of one cloud, its stamp (the primary camera's, s) and the cameras left out."""

    stamp_s: float
    views: list[CameraView]
    missing: list[str]


class CameraViewAssembler:
    """``add_depth(...)`` returns :class:`AssembledViews` when the primary camera's frame completes a cloud."""

    def __init__(self, camera_to_base: Mapping[str, np.ndarray], max_skew_s: float, with_color: bool) -> None:
        if not camera_to_base:
            raise ValueError("CameraViewAssembler needs at least one camera in camera_to_base, got none")
        if not max_skew_s >= 0:
            raise ValueError(f"max_skew_s must be >= 0 s, got {max_skew_s!r}")
        self.camera_to_base = {name: np.asarray(t, float) for name, t in camera_to_base.items()}
        self.primary = next(iter(self.camera_to_base))
        self.max_skew_s = max_skew_s
        self.with_color = with_color
        self._latest: dict[str, tuple[float, np.ndarray, CameraIntrinsics]] = {}
        self._colors: dict[str, deque] = {name: deque(maxlen=4) for name in self.camera_to_base}
        self._waiting_for_color = False

    def add_color(self, camera: str, stamp_s: float, color_rgb: np.ndarray) -> AssembledViews | None:
        """Store a colour frame; returns the views of a cloud when it completes the primary's waiting depth frame."""
        if camera not in self.camera_to_base:
            raise ValueError(f"unknown camera {camera!r}; configured: {list(self.camera_to_base)}")
        self._colors[camera].append((stamp_s, color_rgb))
        waiting = self._latest.get(self.primary)
        if camera == self.primary and self._waiting_for_color and abs(waiting[0] - stamp_s) <= STAMP_MATCH_S:
            self._waiting_for_color = False
            return self._assemble(waiting[0])
        return None

    def _color_for(self, camera: str, stamp_s: float, shape: tuple[int, int]) -> np.ndarray | None:
        for color_stamp, rgb in reversed(self._colors[camera]):
            if abs(color_stamp - stamp_s) <= STAMP_MATCH_S and rgb.shape[:2] == shape:
                return rgb
        return None

    def add_depth(
        self, camera: str, stamp_s: float, depth_m: np.ndarray, intrinsics: CameraIntrinsics
    ) -> AssembledViews | None:
        """Store a depth frame; returns the views of a cloud when ``camera`` is the primary, else None."""
        if camera not in self.camera_to_base:
            raise ValueError(f"unknown camera {camera!r}; configured: {list(self.camera_to_base)}")
        self._latest[camera] = (stamp_s, depth_m, intrinsics)
        if camera != self.primary:
            return None
        if self.with_color and self._color_for(camera, stamp_s, depth_m.shape) is None:
            self._waiting_for_color = True
            return None
        self._waiting_for_color = False
        return self._assemble(stamp_s)

    def _assemble(self, stamp_s: float) -> AssembledViews:
        views, missing = [], []
        for name, transform in self.camera_to_base.items():
            latest = self._latest.get(name)
            if latest is None or abs(latest[0] - stamp_s) > self.max_skew_s:
                missing.append(name)
                continue
            color = self._color_for(name, latest[0], latest[1].shape) if self.with_color else None
            views.append(CameraView(latest[1], latest[2], transform, color))
        return AssembledViews(stamp_s, views, missing)
