"""DP3-style point-cloud diffusion policy: PointNet-like encoder + state MLP, FiLM 1-D U-Net."""

from __future__ import annotations

from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.dp3.configuration_dp3 import DP3Config
from gpc_ros.policies.objectives import VPDiffusionObjective


class DP3Policy(ChunkPolicy):
    """Point-cloud diffusion policy; trained with DDPM, predicting ``sample`` (default), ``epsilon`` or ``v``."""

    policy_type = "dp3"
    config_class = DP3Config

    @classmethod
    def make_objective(cls, config: DP3Config) -> VPDiffusionObjective:
        """The DDPM objective on ``config``'s VP schedule, predicting ``config.parameterization``."""
        return VPDiffusionObjective.from_config(config)
