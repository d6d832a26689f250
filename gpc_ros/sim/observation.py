"""What a parent observes in the cell, built the same way for demo collection and for evaluation.

* ``observation.image``: the front camera's colour, centre-cropped to a square and resized to ``image_size``
  (area averaging), uint8 ``(S, S, 3)``.
* ``observation.image_wrist``: the wrist camera's colour, the same way.
* ``observation.pointcloud``: the front camera's depth and colour through
  :class:`gpc_ros.perception.pointcloud.PointCloudPipeline` (the code pointcloud_node runs, ``with_color``) with
  :data:`CELL_POINTCLOUD` (crop box just above the table top, so the cloud holds the cubes and the hand, as DP3 crops
  the table), float32 ``(N, 6)``: ``x, y, z`` in m in fr3_link0, then ``r, g, b`` in [0, 1]. A parent trained on
  ``xyz`` only (``point_dim`` 3) reads the first three columns
  (:func:`gpc_ros.policies.encoders.observation.observation_tensors`).
* ``observation.state``: the measured TCP pose and gripper width in the action layout of
  :mod:`gpc_ros.action_space` (10 numbers), float32.
"""

from __future__ import annotations

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import CameraView, PointCloudConfig, PointCloudPipeline

IMAGE_KEY = "observation.image"
WRIST_IMAGE_KEY = "observation.image_wrist"
POINTCLOUD_KEY = "observation.pointcloud"
STATE_KEY = "observation.state"

#: The cell's point cloud: the workspace above the table top (5 mm up, so the table plane is cropped away).
CELL_POINTCLOUD = PointCloudConfig(num_points=512, crop_min_m=(0.25, -0.35, 0.005), crop_max_m=(0.85, 0.35, 0.35),
                                   voxel_size_m=0.005, pixel_stride=1, min_points=8,
                                   with_color=True)


def policy_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: centre square crop, then area-averaging resize."""
    from PIL import Image

    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = np.ascontiguousarray(rgb[top:top + s, left:left + s])
    if s == size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BOX))


class CloudBuilder:
    """Depth and colour of a fixed camera -> the cell's policy point cloud ``(N, 6)`` (the pointcloud_node pipeline)."""

    def __init__(self, intrinsics: CameraIntrinsics, camera_to_base: np.ndarray,
                 config: PointCloudConfig = CELL_POINTCLOUD) -> None:
        self.pipeline = PointCloudPipeline(config)
        self.intrinsics = intrinsics
        self.camera_to_base = np.asarray(camera_to_base, dtype=np.float64)
        self.config = config

    def __call__(self, depth_m: np.ndarray, color_rgb: np.ndarray | None = None) -> np.ndarray:
        """(N, 6) float32 ``xyz rgb`` points; without ``color_rgb`` the colour columns are 0.

        An all-empty crop (cannot happen with the cubes on the table) gives zeros.
        """
        result = self.pipeline.process([CameraView(depth_m, self.intrinsics, self.camera_to_base, color_rgb)])
        if result.points_base_m is None:
            return np.zeros((self.config.num_points, 6), np.float32)
        return xyzrgb(result.points_base_m, result.colors_rgb)


def xyzrgb(points_m: np.ndarray, colors_rgb: np.ndarray | None) -> np.ndarray:
    """(N, 3) m and (N, 3) uint8 (or None: black) -> the policies' ``(N, 6)`` float32 layout, colour in [0, 1]."""
    points = np.asarray(points_m, np.float32).reshape(-1, 3)
    colors = (np.zeros_like(points) if colors_rgb is None
              else np.asarray(colors_rgb, np.float32).reshape(-1, 3) / np.float32(255.0))
    return np.concatenate([points, colors], axis=1)
