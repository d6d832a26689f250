"""The rule mapping device (hardware) timestamps onto the ROS clock.

Rule: the offset ``ros_time - device_time`` is fixed at the first frame and kept, so intervals between published
stamps equal the device's own intervals (no jitter from the host's receive time). The mapping is re-anchored on
the next frame when the device clock jumps backwards (camera reset, recording looped or restarted) or when the
mapped stamp drifts more than ``max_drift_s`` away from the ROS clock (device clock drift, long stall).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClockMappingConfig:
    """Attributes:
    max_drift_s: re-anchor when |mapped stamp - ROS now| exceeds this (s); must be > 0.
    """

    max_drift_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.max_drift_s > 0:
            raise ValueError(f"ClockMappingConfig.max_drift_s must be > 0 s, got {self.max_drift_s!r}")


class HardwareClockMapper:
    """``ros_stamp_s = mapper.to_ros(device_stamp_s, ros_now_s)`` following the module's rule."""

    def __init__(self, config: ClockMappingConfig | None = None) -> None:
        self.config = config or ClockMappingConfig()
        self._offset_s: float | None = None
        self._last_device_s: float | None = None
        self.anchors = 0  #: how many times the offset was (re)fixed

    def to_ros(self, device_stamp_s: float, ros_now_s: float) -> float:
        """The ROS time (s) of a frame captured at ``device_stamp_s`` (device clock) and received at ``ros_now_s``."""
        reason = None
        if self._offset_s is None:
            reason = "first frame"
        elif self._last_device_s is not None and device_stamp_s < self._last_device_s:
            reason = f"device clock went back from {self._last_device_s:.3f} s to {device_stamp_s:.3f} s"
        elif abs(device_stamp_s + self._offset_s - ros_now_s) > self.config.max_drift_s:
            reason = f"mapped stamp drifted more than {self.config.max_drift_s} s from the ROS clock"
        if reason is not None:
            self._offset_s = ros_now_s - device_stamp_s
            self.anchors += 1
            if self.anchors > 1:
                log.info("re-anchoring device timestamps to the ROS clock: %s", reason)
        self._last_device_s = device_stamp_s
        return device_stamp_s + self._offset_s
