"""Watching and checking the composed policy (no ROS).

Scene content shared by the rviz markers and the Foxglove view, the FR3 description, the recording topic profile,
bag reading/writing with rosbags, and the offline replay report. See docs/monitoring.md.
"""

from gpc_ros.monitor.scene import (
                                   COMPOSED_COLOR,
                                   ENVELOPE_COLOR,
                                   EXECUTED_COLOR,
                                   PARENT_PALETTE,
                                   TEXT_COLOR,
                                   Box,
                                   LineStrip,
                                   Scene,
                                   SceneConfig,
                                   Text,
                                   parent_colors,
)

__all__ = ["COMPOSED_COLOR", "ENVELOPE_COLOR", "EXECUTED_COLOR", "PARENT_PALETTE", "TEXT_COLOR", "Box", "LineStrip",
           "Scene", "SceneConfig", "Text", "parent_colors"]
