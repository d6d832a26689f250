"""Named model sizes: ``small`` (the shipped size, trains on a 2-core CPU in minutes) and ``tiny`` (tests).

:func:`policy_config` builds a family's config for a dataset, taking the action, state, image and point-cloud
shapes from the dataset's ``dataset.json`` so that the model always matches the data it is trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from gpc_ros.policies.chunk_policy import ACTION_KEY, ChunkPolicyConfig
from gpc_ros.policies.encoders.image import ImageEncoderConfig
from gpc_ros.policies.encoders.observation import IMAGE_KEY, POINTCLOUD_KEY, STATE_KEY, ObservationConfig
from gpc_ros.policies.encoders.pointcloud import PointCloudEncoderConfig
from gpc_ros.policies.encoders.state import StateEncoderConfig
from gpc_ros.policies.factory import policy_class
from gpc_ros.policies.unet1d import UnetConfig

SIZES = ("tiny", "small")


def _parts(size: str) -> tuple[ImageEncoderConfig, PointCloudEncoderConfig, StateEncoderConfig, UnetConfig, int]:
    if size == "small":
        return ImageEncoderConfig(), PointCloudEncoderConfig(), StateEncoderConfig(), UnetConfig(), 16
    if size == "tiny":
        return (ImageEncoderConfig(image_size=32, width=8, num_conv=2, num_keypoints=8, feature_dim=16),
                PointCloudEncoderConfig(num_points=64, hidden_dims=(16, 32), feature_dim=16),
                StateEncoderConfig(hidden_dim=16, feature_dim=16),
                UnetConfig(down_dims=(16, 32), kernel_size=3, time_embed_dim=16), 8)
    raise ValueError(f"size must be one of {SIZES}; got {size!r}")


def policy_config(policy_type: str, size: str = "small", keys: Mapping[str, Sequence[int]] | None = None,
                  modality: str | None = None, parameterization: str | None = None) -> ChunkPolicyConfig:
    """The ``policy_type`` config at ``size``.

    ``keys`` (``dataset.json`` ``"keys"``: name -> per-step shape) sets action/state dims, image size and point
    count. ``modality`` applies to ``flow``; ``parameterization`` to ``dp3``.
    """
    cls = policy_class(policy_type).config_class
    image, cloud, state, unet, horizon = _parts(size)
    default = cls()
    modality = modality or default.observation.modality
    action_dim, state_dim = default.action_dim, default.observation.state_dim
    if keys is not None:
        if ACTION_KEY not in keys:
            raise ValueError(f"dataset keys lack {ACTION_KEY!r}: {sorted(keys)}")
        action_dim = int(keys[ACTION_KEY][-1])
        state_dim = int(keys[STATE_KEY][-1]) if STATE_KEY in keys else 0
        if modality == "image" and IMAGE_KEY in keys:
            image = replace(image, image_size=int(keys[IMAGE_KEY][0]), channels=int(keys[IMAGE_KEY][-1]))
        if modality == "pointcloud" and POINTCLOUD_KEY in keys:
            cloud = replace(cloud, num_points=int(keys[POINTCLOUD_KEY][0]), point_dim=int(keys[POINTCLOUD_KEY][-1]))
    observation = ObservationConfig(modality=modality, obs_horizon=2, state_dim=state_dim, image=image,
                                    pointcloud=cloud, state=state)
    changes = dict(action_dim=action_dim, action_horizon=horizon, observation=observation, unet=unet)
    if parameterization is not None:
        changes["parameterization"] = parameterization
    return replace(default, **changes)
