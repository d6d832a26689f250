"""The rule mapping device (hardware) timestamps onto the ROS clock.

Rule: the offset ``ros_time - device_time`` is fixed at the first frame and kept, so intervals between published
stamps equal the device's own intervals (no jitter from the host's receive time). The mapping is re-anchored on
the next frame when the device clock jumps backwards (camera reset, recording looped or restarted) or when the
mapped stamp drifts more than ``max_drift_s`` away from the ROS clock (device clock drift, long stall).

Stamps never go backwards: a re-anchored stamp is the ROS time of arrival, or ``min_step_s`` after the previous
stamp if that is later (a source delivering faster than real time, e.g. unpaced playback, runs its stamps ahead of
the clock; they then advance by ``min_step_s`` per frame until the clock has caught up, instead of jumping back).
Every stamp is at least ``min_step_s`` after the one before it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Re-anchoring is logged at INFO at most this often (s); the others go to DEBUG and are counted in the next line.
ANCHOR_LOG_PERIOD_S = 60.0


@dataclass(frozen=True)
class ClockMappingConfig:
    """How device stamps map to ROS time.

    Attributes:
        max_drift_s: re-anchor when |mapped stamp - ROS now| exceeds this (s); must be > 0.
        min_step_s: smallest step between consecutive stamps (s); must be > 0 (1 µs: well above float64 resolution
            of epoch seconds, far below any frame period).
    """

    max_drift_s: float = 0.5
    min_step_s: float = 1e-6

    def __post_init__(self) -> None:
        if not self.max_drift_s > 0:
            raise ValueError(f"ClockMappingConfig.max_drift_s must be > 0 s, got {self.max_drift_s!r}")
        if not self.min_step_s > 0:
            raise ValueError(f"ClockMappingConfig.min_step_s must be > 0 s, got {self.min_step_s!r}")


class HardwareClockMapper:
    """``ros_stamp_s = mapper.to_ros(device_stamp_s, ros_now_s)`` following the module's rule."""

    def __init__(self, config: ClockMappingConfig | None = None) -> None:
        self.config = config or ClockMappingConfig()
        self._offset_s: float | None = None
        self._last_device_s: float | None = None
        self._last_stamp_s: float | None = None
        self._last_log_s = -float("inf")
        self._unlogged = 0
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
        floor = -float("inf") if self._last_stamp_s is None else self._last_stamp_s + self.config.min_step_s
        if reason is None:
            stamp = max(device_stamp_s + self._offset_s, floor)  # equal device stamps: nudged, offset kept
        else:
            stamp = max(ros_now_s, floor)
            self._offset_s = stamp - device_stamp_s
            self.anchors += 1
            if self.anchors > 1:
                self._log_anchor(reason)
        self._last_device_s = device_stamp_s
        self._last_stamp_s = stamp
        return stamp

    def _log_anchor(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_log_s < ANCHOR_LOG_PERIOD_S:
            self._unlogged += 1
            logger.debug("re-anchoring device timestamps to the ROS clock: %s", reason)
            return
        more = f" ({self._unlogged} more since the last such line)" if self._unlogged else ""
        logger.info("re-anchoring device timestamps to the ROS clock: %s%s; stamps stay increasing", reason, more)
        self._last_log_s, self._unlogged = now, 0
