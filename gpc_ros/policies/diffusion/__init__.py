"""RGB Diffusion Policy (config beside model, LeRobot style)."""

from gpc_ros.policies.diffusion.configuration_diffusion import DiffusionConfig, VPScheduleConfig
from gpc_ros.policies.diffusion.modeling_diffusion import DiffusionPolicy

__all__ = ["DiffusionConfig", "DiffusionPolicy", "VPScheduleConfig"]
