"""Parent policies for GPC (plain Python + torch, no ROS).

RGB Diffusion Policy, DP3-style point-cloud policy, flow-matching policy; their encoders and 1-D U-Net head,
checkpoints, dataset, training, and the adapter that turns any torch denoiser into the core's parent. See
docs/policies.md.
"""

from gpc_ros.policies.adapter import ModuleParent
from gpc_ros.policies.checkpoint import CheckpointError, load_parent, load_policy, save_policy
from gpc_ros.policies.chunk_policy import ChunkPolicy, ChunkPolicyConfig
from gpc_ros.policies.diffusion import DiffusionConfig, DiffusionPolicy
from gpc_ros.policies.dp3 import DP3Config, DP3Policy
from gpc_ros.policies.factory import POLICY_TYPES, make_policy
from gpc_ros.policies.flow import FlowConfig, FlowMatchingPolicy

__all__ = ["POLICY_TYPES", "CheckpointError", "ChunkPolicy", "ChunkPolicyConfig", "DP3Config", "DP3Policy",
           "DiffusionConfig", "DiffusionPolicy", "FlowConfig", "FlowMatchingPolicy", "ModuleParent", "load_parent",
           "load_policy", "make_policy", "save_policy"]
