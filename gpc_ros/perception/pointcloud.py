"""Depth (+ colour) + intrinsics + camera-to-base extrinsic -> a fixed-size point cloud in the robot base frame.

Stages (several cameras' points are merged in the base frame after stage 2):

1. back-project: valid depth pixels (``min_depth_m < z < max_depth_m``, every ``pixel_stride``-th row and
   column) -> base-frame points. The numpy backend precomputes, per camera, the base-frame ray of every pixel
   (``R_base_cam @ K^-1 [u, v, 1]``), so a frame costs one multiply-add per pixel and axis; the open3d backend
   calls ``PointCloud.create_from_depth_image``.
2. crop to the workspace box ``crop_min_m .. crop_max_m`` (base frame, axis aligned); the numpy backend tests the
   box in the same pass as stage 1 and gathers only the points inside.
3. voxel down-sample (``voxel_size_m``; 0 = off): one point per occupied voxel, the mean of its points (and colours);
   numpy: an O(M) lookup table over the crop box's voxel grid (no sort), open3d: ``voxel_down_sample``.
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

logger = logging.getLogger(__name__)

BACKENDS = ("numpy", "open3d")
FPS_BACKENDS = ("open3d", "numpy")
SHORTFALL_POLICIES = ("pad", "skip")
#: Largest voxel grid (cells) handled with the O(M) lookup table (8 bytes per cell: 32M cells = 256 MB).
_MAX_TABLE_CELLS = 32_000_000


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
        pixel_stride: use every k-th pixel in both image directions (1 = all). At 640x480 and ~1 m a pixel
            covers ~1.7 mm, so stride 2 (3.4 mm) still fills every 1 cm voxel, at a quarter of the cost.
    """

    num_points: int = 1024
    crop_min_m: tuple[float, float, float] = (0.2, -0.5, -0.05)
    crop_max_m: tuple[float, float, float] = (0.9, 0.5, 0.6)
    voxel_size_m: float = 0.01
    min_depth_m: float = 0.1
    max_depth_m: float = 3.0
    shortfall: str = "pad"
    min_points: int = 32
    backend: str = "numpy"
    fps_backend: str = "open3d"
    with_color: bool = False
    pixel_stride: int = 2

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
        if int(self.pixel_stride) != self.pixel_stride or not 1 <= self.pixel_stride <= 16:
            raise ValueError(f"PointCloudConfig.pixel_stride must be an integer in 1..16, got {self.pixel_stride!r}")
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
        """True when no cloud was produced for this frame."""
        return self.points_base_m is None


class PointCloudPipeline:
    """``PointCloudPipeline(config).process([CameraView(...), ...]) -> PointCloudResult``."""

    def __init__(self, config: PointCloudConfig) -> None:
        self.config = config
        self._rays: dict[tuple, np.ndarray] = {}
        self._lo = np.asarray(config.crop_min_m, np.float32)
        self._hi = np.asarray(config.crop_max_m, np.float32)
        self._table: np.ndarray | None = None

    # --- stage 1: back-projection -----------------------------------------------------------------------------------
    def _base_rays(self, intrinsics: CameraIntrinsics, rotation: np.ndarray) -> np.ndarray:
        """(3, h*w) float32 base-frame direction of every used pixel (``pixel_stride``) at unit depth (cached)."""
        key = (intrinsics, rotation.tobytes())
        rays = self._rays.get(key)
        if rays is None:
            step = self.config.pixel_stride
            u = (np.arange(0, intrinsics.width, step) - intrinsics.cx) / intrinsics.fx
            v = (np.arange(0, intrinsics.height, step) - intrinsics.cy) / intrinsics.fy
            uu, vv = np.meshgrid(u, v)
            cam = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)])
            rays = np.ascontiguousarray((rotation @ cam).astype(np.float32))
            if len(self._rays) > 16:
                self._rays.clear()
            self._rays[key] = rays
        return rays

    def back_project(self, view: CameraView, crop: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Valid pixels of one view as base-frame points (M, 3) float32 (m) and colours (M, 3) uint8 or None.

        With ``crop`` (numpy backend) the crop box is applied in the same pass, per coordinate, before any
        gather: the cheapest way to get the cropped cloud (used by :meth:`process`).
        """
        cfg = self.config
        if cfg.backend == "open3d":
            points, colors = self._back_project_open3d(view)
            return self.crop(points, colors) if crop else (points, colors)
        transform = np.asarray(view.camera_to_base, np.float64)
        step = cfg.pixel_stride
        depth = (view.depth_m[::step, ::step] if step > 1 else view.depth_m).reshape(-1)
        rays = self._base_rays(view.intrinsics, transform[:3, :3])
        keep = (depth > cfg.min_depth_m) & (depth < cfg.max_depth_m)
        coords = []
        for axis in range(3):
            coord = depth * rays[axis]
            coord += np.float32(transform[axis, 3])
            if crop:
                keep &= (coord >= self._lo[axis]) & (coord <= self._hi[axis])
            coords.append(coord)
        index = np.flatnonzero(keep)
        points = np.empty((len(index), 3), np.float32)
        for axis in range(3):
            points[:, axis] = coords[axis][index]
        colors = None
        if cfg.with_color and view.color_rgb is not None:
            colors = (view.color_rgb[::step, ::step] if step > 1 else view.color_rgb).reshape(-1, 3)[index]
        return points, colors

    def _back_project_open3d(self, view: CameraView) -> tuple[np.ndarray, np.ndarray | None]:
        import open3d as o3d

        cfg, intr, step = self.config, view.intrinsics, self.config.pixel_stride
        depth = view.depth_m[::step, ::step]
        # pixel i of the strided image is pixel i*step of the original: scale the pinhole model accordingly
        pinhole = o3d.camera.PinholeCameraIntrinsic(
            depth.shape[1], depth.shape[0], intr.fx / step, intr.fy / step, intr.cx / step, intr.cy / step)
        depth = np.ascontiguousarray(np.where(depth > cfg.min_depth_m, depth, 0), np.float32)
        extrinsic = np.linalg.inv(np.asarray(view.camera_to_base, np.float64))  # open3d wants world -> camera
        if cfg.with_color and view.color_rgb is not None:
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(view.color_rgb[::step, ::step])), o3d.geometry.Image(depth),
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
        inside = (points[:, 0] >= self._lo[0]) & (points[:, 0] <= self._hi[0])
        for axis in (1, 2):
            inside &= (points[:, axis] >= self._lo[axis]) & (points[:, axis] <= self._hi[axis])
        return points[inside], None if colors is None else colors[inside]

    # --- stage 3: voxel down-sampling -----------------------------------------------------------------------------
    def voxel_down_sample(self, points: np.ndarray, colors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One point per occupied voxel (mean of its points and colours), voxels ordered by index."""
        size = self.config.voxel_size_m
        if size <= 0 or len(points) == 0:
            return points, colors
        if self.config.backend == "open3d":
            return self._voxel_open3d(points, colors)
        cells = np.floor((self._hi - self._lo) / size).astype(np.int64) + 1
        keys = np.minimum((points[:, 0] - self._lo[0]) / size, cells[0] - 1).astype(np.int64)
        for axis in (1, 2):
            keys *= cells[axis]
            keys += np.minimum((points[:, axis] - self._lo[axis]) / size, cells[axis] - 1).astype(np.int64)
        inverse, n_voxels = self._voxel_ids(keys, int(np.prod(cells)))
        counts = np.bincount(inverse, minlength=n_voxels)
        out_points = np.empty((n_voxels, 3), np.float32)
        for axis in range(3):
            out_points[:, axis] = np.bincount(inverse, weights=points[:, axis], minlength=n_voxels) / counts
        out_colors = None
        if colors is not None:
            out_colors = np.empty((n_voxels, 3), np.uint8)
            for axis in range(3):
                mean = np.bincount(inverse, weights=colors[:, axis], minlength=n_voxels) / counts
                out_colors[:, axis] = np.rint(mean).astype(np.uint8)
        return out_points, out_colors

    def _voxel_ids(self, keys: np.ndarray, n_cells: int) -> tuple[np.ndarray, int]:
        """Dense voxel id per point (voxels numbered in order of first appearance) and the number of voxels.

        For crop boxes of up to ``_MAX_TABLE_CELLS`` cells a reusable lookup table gives O(M) ids without sorting;
        larger grids fall back to ``np.unique`` (sorting, ids in key order).
        """
        if n_cells > _MAX_TABLE_CELLS:
            _, inverse = np.unique(keys, return_inverse=True)
            return inverse.reshape(-1), int(inverse.max()) + 1 if len(inverse) else 0
        if self._table is None or len(self._table) < n_cells:
            self._table = np.empty(n_cells, np.int64)  # stale entries are never read: every key is written first
        table = self._table
        order = np.arange(len(keys))
        table[keys] = order  # one of the points of each voxel wins
        first = table[keys] == order  # exactly one representative per voxel
        n_voxels = int(first.sum())
        table[keys[first]] = np.arange(n_voxels)
        return table[keys], n_voxels

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
        parts = [self.back_project(view, crop=True) for view in views]
        points = np.concatenate([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
        colors = None
        if cfg.with_color and all(c is not None for _, c in parts):
            colors = np.concatenate([c for _, c in parts]) if len(parts) > 1 else parts[0][1]
        n_cropped = len(points)
        points, colors = self.voxel_down_sample(points, colors)
        n_valid = len(points)
        if n_valid < cfg.min_points:
            reason = (
                f"only {n_valid} points after cropping and voxel down-sampling ({n_cropped} valid depth pixels "
                f"inside the crop box), fewer than min_points={cfg.min_points}: frame skipped"
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
