"""DP3-style point-cloud policy (config beside model)."""

from gpc_ros.policies.dp3.configuration_dp3 import DP3Config
from gpc_ros.policies.dp3.modeling_dp3 import DP3Policy

__all__ = ["DP3Config", "DP3Policy"]
