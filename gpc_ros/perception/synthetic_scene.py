"""Exact depth images of simple scenes with known geometry (for tests, benchmarks and recorded demo files).

A scene is a horizontal table plane ``z = table_z_m`` in the base frame with optional axis-aligned boxes standing
on it; :func:`render_depth` ray-casts it from a pinhole camera at ``camera_to_base``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in the base frame: corners ``min_m`` and ``max_m`` (x, y, z) (m), colour (r, g, b)."""

    min_m: tuple[float, float, float]
    max_m: tuple[float, float, float]
    color_rgb: tuple[int, int, int] = (200, 40, 40)


def look_at(eye_m: Sequence[float], target_m: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) pose of an optical frame (z forward, x right, y down) at ``eye_m`` looking at ``target_m`` (base)."""
    eye, target = np.asarray(eye_m, float), np.asarray(target_m, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    transform = np.eye(4)
    transform[:3, :3] = np.stack([x, y, z], axis=1)
    transform[:3, 3] = eye
    return transform


def render_depth(
    intrinsics: CameraIntrinsics,
    camera_to_base: np.ndarray,
    table_z_m: float = 0.0,
    boxes: Sequence[Box] = (),
    table_rgb: tuple[int, int, int] = (120, 120, 120),
) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) float32 (m along the optical axis, 0 = nothing hit) and colour (H, W, 3) uint8 of the scene."""
    u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
    uu, vv = np.meshgrid(u, v)
    rays = np.stack([uu, vv, np.ones_like(uu)], axis=-1) @ camera_to_base[:3, :3].T  # unit optical depth per ray
    origin = camera_to_base[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (table_z_m - origin[2]) / rays[..., 2]
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.inf)
    color = np.empty((*depth.shape, 3), np.uint8)
    color[:] = table_rgb
    for box in boxes:
        lo, hi = np.asarray(box.min_m, float), np.asarray(box.max_m, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - origin) / rays, (hi - origin) / rays
        t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth)
        depth[hit] = t_near[hit]
        color[hit] = box.color_rgb
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    color[depth == 0] = 0
    return depth, color
