"""RGB Diffusion Policy: conv + spatial-softmax image encoder, state MLP, FiLM 1-D U-Net, epsilon prediction."""

from __future__ import annotations

from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.diffusion.configuration_diffusion import DiffusionConfig, VPScheduleConfig
from gpc_ros.policies.objectives import VPDiffusionObjective


class DiffusionPolicy(ChunkPolicy):
    """Diffusion Policy on RGB images; trained with DDPM (``squaredcos_cap_v2``), sampled with DDIM by the core."""

    policy_type = "diffusion"
    config_class = DiffusionConfig

    @classmethod
    def make_objective(cls, config: VPScheduleConfig) -> VPDiffusionObjective:
        """The DDPM objective on ``config``'s VP schedule, predicting ``config.parameterization``."""
        return VPDiffusionObjective.from_config(config)
