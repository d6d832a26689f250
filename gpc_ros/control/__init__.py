"""Franka control core (no rclpy): chunk timing, safety envelope, franky executor, watchdog, gripper.

Import order is one way: :mod:`chunk` and :mod:`timing`, :mod:`envelope`, :mod:`watchdog` are pure numpy;
:mod:`command_gate`, :mod:`gripper` and :mod:`executor` talk to franky. See docs/driver.md.
"""

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.envelope import SafetyEnvelope, SafetyEnvelopeConfig
from gpc_ros.control.timing import SeamBlender, TimingConfig, drop_past_due

__all__ = ["ActionChunk", "ChunkRejectedError", "SafetyEnvelope", "SafetyEnvelopeConfig", "SeamBlender",
           "TimingConfig", "drop_past_due"]
