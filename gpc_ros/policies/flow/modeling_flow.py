"""Flow-matching policy: either encoder, FiLM 1-D U-Net predicting the rectified-flow velocity."""

from __future__ import annotations

from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.flow.configuration_flow import FlowConfig
from gpc_ros.policies.objectives import FlowMatchingObjective


class FlowMatchingPolicy(ChunkPolicy):
    """Rectified-flow policy; the core integrates it with flow Euler/Heun or composes it with VP parents."""

    policy_type = "flow"
    config_class = FlowConfig

    @classmethod
    def make_objective(cls, config: FlowConfig) -> FlowMatchingObjective:
        """The velocity objective; the network sees ``time_scale * t``, training draws ``t`` by ``time_sampling``."""
        return FlowMatchingObjective(float(config.time_scale), config.time_sampling)
