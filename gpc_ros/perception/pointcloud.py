"""Depth (+ colour) + intrinsics + camera-to-base extrinsic -> a fixed-size point cloud in the robot base frame.

Stages (each camera's points are merged in the base frame before cropping):

1. back-project: valid depth pixels (``min_depth_m < z < max_depth_m``) -> base-frame points. The numpy backend
   precomputes, per camera, the base-frame ray of every pixel (``R_base_cam @ K^-1 [u, v, 1]``), so a frame costs
   one multiply-add per valid pixel; the open3d backend calls ``PointCloud.create_from_depth_image``.
2. crop to the workspace box ``crop_min_m .. crop_max_m`` (base frame, axis aligned).
3. voxel down-sample (``voxel_size_m``; 0 = off): one point per occupied voxel, the mean of its points (and colours).
4. farthest-point sampling to exactly ``num_points`` (open3d legacy ``farthest_point_down_sample``: deterministic,
   starts from the first point; the tensor API's FPS takes ~1 s on this CPU and is not used).

Fewer than ``num_points`` points left after stage 3: with ``shortfall="pad"`` (default) the cloud is padded
deterministically by repeating its points in order (index ``i % n_valid``) and the result says how many are
padding; with ``shortfall="skip"`` no cloud is produced. Fewer than ``min_points`` points (e.g. all-zero depth,
an empty workspace) always skips. Skipped frames carry the reason in :attr:`PointCloudResult.reason`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics

log = logging.getLogger(__name__)

BACKENDS = ("numpy", "open3d")
FPS_BACKENDS = ("open3d", "numpy")
SHORTFALL_POLICIES = ("pad", "skip")


def transform_from_xyz_quat(xyz_m: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """(4, 4) rigid transform from a translation (m) and a unit quaternion (x, y, z, w; normalised here)."""
    q = np.asarray(quat_xyzw, float)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"quat_xyzw must be 4 finite numbers (x, y, z, w) with non-zero norm, got {quat_xyzw!r}")
    if np.shape(xyz_m) != (3,) or not np.all(np.isfinite(xyz_m)):
        raise ValueError(f"xyz_m must be 3 finite numbers (m), got {xyz_m!r}")
    x, y, z, w = q / np.linalg.norm(q)
    transform = np.eye(4)
    transform[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    transform[:3, 3] = xyz_m
    return transform


@dataclass(frozen=True)
class PointCloudConfig:
    """How a base-frame point cloud is built (node parameters of ``pointcloud_node`` map 1:1 onto these).

    Attributes:
        num_points: N, points per cloud after farthest-point sampling (DP3 uses 512 or 1024); >= 1.
        crop_min_m, crop_max_m: corners of the workspace box in the base frame (x, y, z) (m); min < max per axis.
        voxel_size_m: voxel edge for down-sampling before FPS (m); 0 disables it (FPS on all points is slower).
        min_depth_m, max_depth_m: depth readings outside (min, max) are treated as no data (m).
        shortfall: what to do with fewer than ``num_points`` points: "pad" (repeat points, reported) or "skip".
        min_points: fewer points than this after down-sampling always skips the frame; >= 1.
        backend: back-projection, crop and voxel stages in "numpy" (precomputed rays) or "open3d" (legacy API).
        fps_backend: farthest-point sampling in "open3d" (legacy API, fast) or "numpy" (reference).
        with_color: carry an RGB colour per point (needs colour images).
    """

    num_points: int = 1024
    crop_min_m: tuple[float, float, float] = (0.2, -0.5, -0.05)
    crop_max_m: tuple[float, float, float] = (0.9, 0.5, 0.6)
    voxel_size_m: float = 0.005
    min_depth_m: float = 0.1
    max_depth_m: float = 3.0
    shortfall: str = "pad"
    min_points: int = 32
    backend: str = "numpy"
    fps_backend: str = "open3d"
    with_color: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_min_m", tuple(float(v) for v in self.crop_min_m))
        object.__setattr__(self, "crop_max_m", tuple(float(v) for v in self.crop_max_m))
        if int(self.num_points) != self.num_points or self.num_points < 1:
            raise ValueError(f"PointCloudConfig.num_points must be an integer >= 1, got {self.num_points!r}")
        if len(self.crop_min_m) != 3 or len(self.crop_max_m) != 3:
            raise ValueError(
                f"PointCloudConfig.crop_min_m/crop_max_m must be 3 numbers (x, y, z) (m), got "
                f"{self.crop_min_m!r} / {self.crop_max_m!r}"
            )
        if not all(lo < hi for lo, hi in zip(self.crop_min_m, self.crop_max_m)):
            raise ValueError(
                f"PointCloudConfig.crop_min_m must be < crop_max_m on every axis, got {self.crop_min_m!r} and "
                f"{self.crop_max_m!r}"
            )
        if not self.voxel_size_m >= 0:
            raise ValueError(f"PointCloudConfig.voxel_size_m must be >= 0 m (0 = off), got {self.voxel_size_m!r}")
        if not 0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(
                f"PointCloudConfig.min_depth_m must be in [0, max_depth_m), got {self.min_depth_m!r} and "
                f"max_depth_m {self.max_depth_m!r}"
            )
        if self.shortfall not in SHORTFALL_POLICIES:
            raise ValueError(f"PointCloudConfig.shortfall must be one of {SHORTFALL_POLICIES}, got {self.shortfall!r}")
        if int(self.min_points) != self.min_points or self.min_points < 1:
            raise ValueError(f"PointCloudConfig.min_points must be an integer >= 1, got {self.min_points!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"PointCloudConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.fps_backend not in FPS_BACKENDS:
            raise ValueError(f"PointCloudConfig.fps_backend must be one of {FPS_BACKENDS}, got {self.fps_backend!r}")


@dataclass(frozen=True)
class CameraView:
    """One camera's contribution to a cloud.

    Attributes:
        depth_m: (H, W) depth (m) in the camera's optical frame (z forward, x right, y down); 0 = no data.
        intrinsics: pinhole model of the depth image.
        camera_to_base: (4, 4) pose of the optical frame in the base frame (maps camera points to base points).
        color_rgb: (H, W, 3) uint8 aligned to the depth, or None.
    """

    depth_m: np.ndarray
    intrinsics: CameraIntrinsics
    camera_to_base: np.ndarray = field(repr=False)
    color_rgb: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = (self.intrinsics.height, self.intrinsics.width)
        if self.depth_m.shape != shape:
            raise ValueError(f"CameraView.depth_m must have shape {shape}, got {self.depth_m.shape}")
        if np.shape(self.camera_to_base) != (4, 4):
            raise ValueError(f"CameraView.camera_to_base must be (4, 4), got {np.shape(self.camera_to_base)}")
        if self.color_rgb is not None and self.color_rgb.shape != (*shape, 3):
            raise ValueError(f"CameraView.color_rgb must have shape {(*shape, 3)}, got {self.color_rgb.shape}")


@dataclass(frozen=True)
class PointCloudResult:
    """Outcome of one frame.

    Attributes:
        points_base_m: (N, 3) float32 points in the base frame (m), or None when skipped.
        colors_rgb: (N, 3) uint8 colours, or None (skipped or ``with_color`` off).
        n_valid: distinct points available for sampling (after crop and voxel).
        n_padded: how many of the N points repeat others because n_valid < N (0 normally).
        reason: why the frame was skipped or padded ("" when neither).
    """

    points_base_m: np.ndarray | None
    colors_rgb: np.ndarray | None
    n_valid: int
    n_padded: int = 0
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.points_base_m is None


class PointCloudPipeline:
    """``PointCloudPipeline(config).process([CameraView(...), ...]) -> PointCloudResult``."""

    def __init__(self, config: PointCloudConfig) -> None:
        self.config = config
        self._rays: dict[tuple, np.ndarray] = {}
        self._lo = np.asarray(config.crop_min_m, np.float32)
        self._hi = np.asarray(config.crop_max_m, np.float32)

    # --- stage 1: back-projection -----------------------------------------------------------------------------------
    def _base_rays(self, intrinsics: CameraIntrinsics, rotation: np.ndarray) -> np.ndarray:
        """(H*W, 3) float32 base-frame direction of every pixel scaled to unit depth (cached per camera)."""
        key = (intrinsics, rotation.tobytes())
        rays = self._rays.get(key)
        if rays is None:
            u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
            v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
            uu, vv = np.meshgrid(u, v)
            cam = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], axis=1)
            rays = np.ascontiguousarray((cam @ rotation.T).astype(np.float32))
            if len(self._rays) > 16:
                self._rays.clear()
            self._rays[key] = rays
        return rays

    def back_project(self, view: CameraView) -> tuple[np.ndarray, np.ndarray | None]:
        """Valid pixels of one view as base-frame points (M, 3) float32 (m) and colours (M, 3) uint8 or None."""
        cfg = self.config
        if cfg.backend == "open3d":
            return self._back_project_open3d(view)
        transform = np.asarray(view.camera_to_base, np.float64)
        depth = view.depth_m.reshape(-1)
        index = np.flatnonzero((depth > cfg.min_depth_m) & (depth < cfg.max_depth_m))
        rays = self._base_rays(view.intrinsics, transform[:3, :3])
        points = rays[index] * depth[index, None].astype(np.float32)
        points += transform[:3, 3].astype(np.float32)
        colors = None
        if cfg.with_color and view.color_rgb is not None:
            colors = view.color_rgb.reshape(-1, 3)[index]
        return points, colors

    def _back_project_open3d(self, view: CameraView) -> tuple[np.ndarray, np.ndarray | None]:
        import open3d as o3d

        cfg, intr = self.config, view.intrinsics
        pinhole = o3d.camera.PinholeCameraIntrinsic(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy)
        depth = np.where(view.depth_m > cfg.min_depth_m, view.depth_m, 0).astype(np.float32)
        extrinsic = np.linalg.inv(np.asarray(view.camera_to_base, np.float64))  # open3d wants world -> camera
        if cfg.with_color and view.color_rgb is not None:
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(view.color_rgb)), o3d.geometry.Image(depth),
                depth_scale=1.0, depth_trunc=cfg.max_depth_m, convert_rgb_to_intensity=False)
            cloud = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, pinhole, extrinsic)
            colors = (np.asarray(cloud.colors) * 255.0 + 0.5).astype(np.uint8)
        else:
            cloud = o3d.geometry.PointCloud.create_from_depth_image(
                o3d.geometry.Image(depth), pinhole, extrinsic, depth_scale=1.0, depth_trunc=cfg.max_depth_m)
            colors = None
        return np.asarray(cloud.points, np.float32), colors

    # --- stage 2: crop ------------------------------------------------------------------------------------------------
    def crop(self, points: np.ndarray, colors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Points inside the workspace box (inclusive)."""
        inside = np.all((points >= self._lo) & (points <= self._hi), axis=1)
        return points[inside], None if colors is None else colors[inside]

    # --- stage 3: voxel down-sampling -----------------------------------------------------------------------------
    def voxel_down_sample(self, points: np.ndarray, colors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One point per occupied voxel (mean of its points and colours), voxels ordered by index."""
        size = self.config.voxel_size_m
        if size <= 0 or len(points) == 0:
            return points, colors
        if self.config.backend == "open3d":
            return self._voxel_open3d(points, colors)
        dims = np.floor((self._hi - self._lo) / size).astype(np.int64) + 1
        cells = np.minimum(np.floor((points - self._lo) / size).astype(np.int64), dims - 1)
        keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        sums = np.zeros((len(counts), 3), np.float64)
        for axis in range(3):
            sums[:, axis] = np.bincount(inverse, weights=points[:, axis], minlength=len(counts))
        out_points = (sums / counts[:, None]).astype(np.float32)
        out_colors = None
        if colors is not None:
            out_colors = np.empty((len(counts), 3), np.uint8)
            for axis in range(3):
                mean = np.bincount(inverse, weights=colors[:, axis], minlength=len(counts)) / counts
                out_colors[:, axis] = np.rint(mean).astype(np.uint8)
        return out_points, out_colors

    def _voxel_open3d(self, points: np.ndarray, colors: np.ndarray | None):
        import open3d as o3d

        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
        if colors is not None:
            cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
        cloud = cloud.voxel_down_sample(self.config.voxel_size_m)
        out_colors = None if colors is None else np.rint(np.asarray(cloud.colors) * 255.0).astype(np.uint8)
        return np.asarray(cloud.points, np.float32), out_colors

    # --- stage 4: farthest-point sampling ----------------------------------------------------------------------------
    def farthest_point_indices(self, points: np.ndarray, n: int) -> np.ndarray:
        """Indices of ``n`` farthest-point samples of ``points`` (M > n), starting from index 0."""
        if self.config.fps_backend == "open3d":
            import open3d as o3d

            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
            # Sample indices via a parallel index channel: open3d returns points, so carry the index in the normals.
            cloud.normals = o3d.utility.Vector3dVector(
                np.repeat(np.arange(len(points), dtype=np.float64)[:, None], 3, axis=1))
            sampled = cloud.farthest_point_down_sample(n)
            return np.asarray(sampled.normals)[:, 0].astype(np.int64)
        return farthest_point_indices_numpy(points, n)

    # --- the chain --------------------------------------------------------------------------------------------------
    def process(self, views: Sequence[CameraView]) -> PointCloudResult:
        """Build one cloud from one or more cameras (merged in the base frame)."""
        cfg = self.config
        if not views:
            raise ValueError("PointCloudPipeline.process needs at least one CameraView, got none")
        parts = [self.back_project(view) for view in views]
        points = np.concatenate([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
        colors = None
        if cfg.with_color and all(c is not None for _, c in parts):
            colors = np.concatenate([c for _, c in parts]) if len(parts) > 1 else parts[0][1]
        n_depth = len(points)
        points, colors = self.crop(points, colors)
        n_cropped = len(points)
        points, colors = self.voxel_down_sample(points, colors)
        n_valid = len(points)
        if n_valid < cfg.min_points:
            reason = (
                f"only {n_valid} points after cropping and voxel down-sampling ({n_depth} valid depth pixels, "
                f"{n_cropped} inside the crop box), fewer than min_points={cfg.min_points}: frame skipped"
            )
            return PointCloudResult(None, None, n_valid, 0, reason)
        n = cfg.num_points
        if n_valid >= n:
            index = self.farthest_point_indices(points, n) if n_valid > n else np.arange(n)
            return PointCloudResult(points[index], None if colors is None else colors[index], n_valid)
        if cfg.shortfall == "skip":
            return PointCloudResult(
                None, None, n_valid, 0, f"only {n_valid} of num_points={n} points in the crop box: frame skipped")
        index = np.arange(n) % n_valid
        return PointCloudResult(
            points[index], None if colors is None else colors[index], n_valid, n - n_valid,
            f"only {n_valid} of num_points={n} points in the crop box: padded with {n - n_valid} repeated points",
        )


def farthest_point_indices_numpy(points: np.ndarray, n: int) -> np.ndarray:
    """Reference farthest-point sampling: ``n`` indices of ``points`` (M, 3), starting from index 0."""
    points = np.asarray(points, np.float32)
    chosen = np.empty(n, np.int64)
    distance = np.full(len(points), np.inf, np.float32)
    current = 0
    for i in range(n):
        chosen[i] = current
        delta = points - points[current]
        np.minimum(distance, np.einsum("ij,ij->i", delta, delta), out=distance)
        current = int(np.argmax(distance))
    return chosen
