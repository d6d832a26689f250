"""The Franka Hand through ``franky.Gripper``: width targets, rate-limited, never blocking the control loop.

Width targets arrive with every control tick; the hand executes one move at a time, so :class:`GripperCommander`
sends a new command only when the target changed by more than ``deadband_m`` and the previous command is at least
``min_period_s`` old. Widths at or below ``grasp_below_m`` become a position-based grasp (franky-sim and the real
hand both squeeze with ``grasp(0, speed, force, epsilon_outer=max width)``), with the force clamped to the
envelope's ``gripper_max_force_n``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpc_ros.control.envelope import SafetyEnvelope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GripperConfig:
    """Rate limiting and grasp behaviour of the hand."""

    enabled: bool = True
    """Connect to and command the gripper (False for an arm without a Franka Hand)."""
    min_period_s: float = 0.2
    """At most one gripper command per this period (s)."""
    deadband_m: float = 0.002
    """A target closer than this to the last commanded width is not sent again (m)."""
    grasp_below_m: float = 0.005
    """Targets at or below this width close the hand with a grasp (force-limited) instead of a move (m)."""
    grasp_force_n: float = 20.0
    """Grasp force (N), clamped to the envelope's gripper_max_force_n."""

    def __post_init__(self) -> None:
        for name in ("min_period_s", "deadband_m", "grasp_force_n"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"GripperConfig.{name} must be a number > 0, got {value!r}")
        if not (np.isfinite(self.grasp_below_m) and 0.0 <= self.grasp_below_m < 0.08):
            raise ValueError(f"GripperConfig.grasp_below_m must be in [0, 0.08) m, got {self.grasp_below_m!r}")


class GripperCommander:
    """Sends width targets to a ``franky.Gripper`` (or anything with ``move_async``/``grasp_async``/``width``)."""

    def __init__(self, gripper, config: GripperConfig, envelope: SafetyEnvelope,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._gripper = gripper
        self.config = config
        self._envelope = envelope
        self._clock = clock
        self._last_width_m: float | None = None
        self._last_time_s = -np.inf
        self._pending = None
        self.commands_sent = 0

    @property
    def width_m(self) -> float:
        """Measured opening width (m)."""
        return float(self._gripper.width)

    def command(self, width_m: float) -> bool:
        """Ask for ``width_m`` (clamped to the envelope); returns whether a command was actually sent."""
        width = self._envelope.clamp_gripper_width(width_m)
        now = self._clock()
        if self._last_width_m is not None and abs(width - self._last_width_m) < self.config.deadband_m:
            return False
        if now - self._last_time_s < self.config.min_period_s:
            self._envelope.counter.add("gripper_rate_limited")
            return False
        env = self._envelope.config
        if width <= self.config.grasp_below_m:
            force = min(self.config.grasp_force_n, env.gripper_max_force_n)
            self._pending = self._gripper.grasp_async(0.0, env.gripper_speed_m_s, force,
                                                      epsilon_inner=0.005, epsilon_outer=env.gripper_max_width_m)
        else:
            self._pending = self._gripper.move_async(width, env.gripper_speed_m_s)
        self._last_width_m = width
        self._last_time_s = now
        self.commands_sent += 1
        logger.debug("gripper -> %.4f m", width)
        return True

    def release(self) -> None:
        """Drop the connection to the hand (the ``franky.Gripper`` and any pending command).

        Another client can then connect; the commander is unusable afterwards.
        """
        self._pending = None
        self._gripper = None

    def stop(self) -> None:
        """Stop the fingers where they are (best effort, does not wait)."""
        try:
            self._gripper.stop_async()
        finally:
            self._last_width_m = None
