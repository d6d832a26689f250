"""Depth -> colour alignment in numpy, for recordings whose depth stream is not aligned to colour yet.

Live cameras are aligned by librealsense's ``rs.align``; a recording played at sensor level (see
:mod:`gpc_ros.perception.playback_source`) carries raw depth, the two intrinsics and the depth-to-colour extrinsic,
and this module re-projects it: each valid depth pixel is back-projected, moved into the colour optical frame and
splatted onto the nearest colour pixel, keeping the nearest surface when several land on one pixel (z-buffer).
Colour pixels that no depth pixel reaches stay 0 (no data), as with ``rs.align``'s holes.
"""

from __future__ import annotations

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics


def is_identity_alignment(depth: CameraIntrinsics, color: CameraIntrinsics, depth_to_color: np.ndarray) -> bool:
    """True when depth already is aligned to colour (same pinhole model, identity extrinsic within 1e-9)."""
    return depth == color and np.allclose(depth_to_color, np.eye(4), atol=1e-9)


def align_depth_to_color(
    depth_m: np.ndarray,
    depth_intrinsics: CameraIntrinsics,
    color_intrinsics: CameraIntrinsics,
    depth_to_color: np.ndarray,
) -> np.ndarray:
    """Re-project a depth image into the colour camera.

    Args:
        depth_m: (Hd, Wd) float depth (m) in the depth optical frame; 0 = no data.
        depth_intrinsics: pinhole model of the depth image.
        color_intrinsics: pinhole model of the colour image.
        depth_to_color: (4, 4) transform from the depth to the colour optical frame (m).

    Returns:
        (Hc, Wc) float32 depth (m) along the colour camera's optical axis; 0 where no depth pixel lands.
    """
    if depth_m.shape != (depth_intrinsics.height, depth_intrinsics.width):
        raise ValueError(
            f"depth_m must have shape {(depth_intrinsics.height, depth_intrinsics.width)}, got {depth_m.shape}"
        )
    if is_identity_alignment(depth_intrinsics, color_intrinsics, depth_to_color):
        return np.asarray(depth_m, np.float32)
    v, u = np.nonzero(depth_m > 0)
    z = depth_m[v, u].astype(np.float64)
    points = np.stack(
        [(u - depth_intrinsics.cx) / depth_intrinsics.fx * z, (v - depth_intrinsics.cy) / depth_intrinsics.fy * z, z]
    )
    points = depth_to_color[:3, :3] @ points + depth_to_color[:3, 3:4]
    zc = points[2]
    in_front = zc > 0
    points, zc = points[:, in_front], zc[in_front]
    uc = np.rint(points[0] / zc * color_intrinsics.fx + color_intrinsics.cx).astype(np.int64)
    vc = np.rint(points[1] / zc * color_intrinsics.fy + color_intrinsics.cy).astype(np.int64)
    inside = (uc >= 0) & (uc < color_intrinsics.width) & (vc >= 0) & (vc < color_intrinsics.height)
    uc, vc, zc = uc[inside], vc[inside], zc[inside]
    out = np.zeros((color_intrinsics.height, color_intrinsics.width), np.float32)
    flat = vc * color_intrinsics.width + uc
    near_first = np.argsort(zc, kind="stable")
    pixels, first = np.unique(flat[near_first], return_index=True)  # first hit per pixel = nearest surface
    out.reshape(-1)[pixels] = zc[near_first][first]
    return out
