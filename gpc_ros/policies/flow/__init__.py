"""Flow-matching policy (config beside model)."""

from gpc_ros.policies.flow.configuration_flow import FlowConfig
from gpc_ros.policies.flow.modeling_flow import FlowMatchingPolicy

__all__ = ["FlowConfig", "FlowMatchingPolicy"]
