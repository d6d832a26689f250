"""The environment a gpc_ros ROS 2 graph runs in (no rclpy here: this only builds environment variables).

Every process of one graph must agree on these: the DDS domain, the discovery range, the Fast DDS profile with
fast initial announcements and the large-data transport that carries 640x480 images at 30 Hz.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gpc_ros.paths import config_file

#: ROS_DOMAIN_ID values that are safe on Linux (port ranges of >= 233 overflow; see docs/ros_environment.md).
MAX_SAFE_DOMAIN_ID = 101


def graph_env(
    domain_id: int,
    *,
    localhost_only: bool = True,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a process of a gpc_ros graph on ``domain_id``.

    Args:
        domain_id: ROS_DOMAIN_ID, 0..101.
        localhost_only: restrict discovery to this machine (the default for the simulated cell; a real cell with
            computers on a lab network sets False and should use SROS2 enclaves, see docs/).
        base: environment to start from (default: ``os.environ``).
    """
    if not 0 <= int(domain_id) <= MAX_SAFE_DOMAIN_ID:
        raise ValueError(f"domain_id must be in 0..{MAX_SAFE_DOMAIN_ID}, got {domain_id!r}")
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST" if localhost_only else "SUBNET"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_file("fastdds_profile.xml")))
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP workers sleep instead of spinning between ops
    return env
