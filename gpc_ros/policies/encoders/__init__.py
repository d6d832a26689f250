"""Observation encoders: images (conv + spatial softmax), point clouds (PointNet-like), robot state (MLP)."""

from gpc_ros.policies.encoders.image import ImageEncoder, ImageEncoderConfig, SpatialSoftmax
from gpc_ros.policies.encoders.observation import (
    IMAGE_KEY,
    POINTCLOUD_KEY,
    STATE_KEY,
    ObservationConfig,
    ObservationEncoder,
    observation_tensors,
)
from gpc_ros.policies.encoders.pointcloud import PointCloudEncoder, PointCloudEncoderConfig
from gpc_ros.policies.encoders.state import StateEncoder, StateEncoderConfig

__all__ = ["IMAGE_KEY", "POINTCLOUD_KEY", "STATE_KEY", "ImageEncoder", "ImageEncoderConfig", "ObservationConfig",
           "ObservationEncoder", "PointCloudEncoder", "PointCloudEncoderConfig", "SpatialSoftmax", "StateEncoder",
           "StateEncoderConfig", "observation_tensors"]
