"""Depth -> base-frame cloud: geometry of known scenes, exact N, crop box, shortfall policy, multi-camera merge."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.perception.alignment import align_depth_to_color
from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import (
    CameraView,
    PointCloudConfig,
    PointCloudPipeline,
    farthest_point_indices_numpy,
    transform_from_xyz_quat,
)
from gpc_ros.perception.synthetic_scene import Box, look_at, render_depth

K = CameraIntrinsics(160, 120, 150.0, 150.0, 79.5, 59.5)
FRONT = look_at([1.1, 0.0, 0.6], [0.55, 0.0, 0.0])
LEFT = look_at([0.55, 0.6, 0.6], [0.55, 0.0, 0.0])
BOX = Box((0.5, -0.05, 0.0), (0.6, 0.05, 0.12))
CROP = dict(crop_min_m=(0.3, -0.3, -0.02), crop_max_m=(0.8, 0.3, 0.4))
BACKENDS = [("numpy", "open3d"), ("open3d", "open3d"), ("numpy", "numpy")]


def view(pose, boxes=(), table_z_m=0.0, color=False) -> CameraView:
    depth, rgb = render_depth(K, pose, table_z_m, boxes)
    return CameraView(depth, K, pose, rgb if color else None)


@pytest.mark.parametrize("backend, fps_backend", BACKENDS)
def test_table_plane_lands_at_its_height(backend, fps_backend):
    table_z_m = 0.035
    config = PointCloudConfig(num_points=256, backend=backend, fps_backend=fps_backend, **CROP)
    result = PointCloudPipeline(config).process([view(FRONT, table_z_m=table_z_m)])
    assert result.n_padded == 0 and result.reason == ""
    points = result.points_base_m
    assert points.shape == (256, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, 2], table_z_m, atol=0.002)
    assert len(np.unique(points, axis=0)) == 256  # FPS picks distinct points
    # FPS spreads over the visible part of the crop box: the cloud spans most of it in x and y.
    assert np.ptp(points[:, 0]) > 0.3 and np.ptp(points[:, 1]) > 0.4


@pytest.mark.parametrize("backend, fps_backend", BACKENDS)
def test_box_of_known_size_and_crop(backend, fps_backend):
    config = PointCloudConfig(num_points=512, backend=backend, fps_backend=fps_backend, **CROP)
    points = PointCloudPipeline(config).process([view(FRONT, [BOX])]).points_base_m
    assert points.shape == (512, 3)
    assert np.all(points >= np.array(CROP["crop_min_m"], np.float32))
    assert np.all(points <= np.array(CROP["crop_max_m"], np.float32))
    on_box = points[points[:, 2] > 0.01]
    assert len(on_box) > 10
    margin = 0.006  # voxel averaging moves points by at most half a voxel diagonal
    assert np.all(on_box[:, :2] >= np.array(BOX.min_m[:2]) - margin)
    assert np.all(on_box[:, :2] <= np.array(BOX.max_m[:2]) + margin)
    assert on_box[:, 2].max() == pytest.approx(BOX.max_m[2], abs=0.003)


def test_backends_agree_on_the_cloud():
    clouds = []
    for backend in ("numpy", "open3d"):
        config = PointCloudConfig(num_points=256, backend=backend, **CROP)
        clouds.append(PointCloudPipeline(config).process([view(FRONT, [BOX])]).points_base_m)
    # Same surface: every point of one cloud is within a voxel or so of the other cloud.
    distance = np.linalg.norm(clouds[0][:, None] - clouds[1][None], axis=-1).min(axis=1)
    assert np.percentile(distance, 95) < 0.03


def test_colour_follows_the_points():
    config = PointCloudConfig(num_points=256, with_color=True, **CROP)
    result = PointCloudPipeline(config).process([view(FRONT, [BOX], color=True)])
    colors, points = result.colors_rgb, result.points_base_m
    assert colors.shape == (256, 3) and colors.dtype == np.uint8
    top = points[:, 2] > BOX.max_m[2] - 0.002
    table = points[:, 2] < 0.002
    assert top.any() and table.any()
    assert np.all(colors[top] == BOX.color_rgb)
    assert np.all(colors[table] == (120, 120, 120))


def test_all_zero_depth_is_skipped():
    empty = CameraView(np.zeros((120, 160), np.float32), K, FRONT)
    result = PointCloudPipeline(PointCloudConfig(**CROP)).process([empty])
    assert result.skipped and result.points_base_m is None
    assert "0 valid depth pixels" in result.reason and "skipped" in result.reason


def test_shortfall_pads_deterministically_or_skips():
    small_box = dict(crop_min_m=(0.54, -0.01, -0.01), crop_max_m=(0.56, 0.01, 0.01), voxel_size_m=0.005,
                     pixel_stride=1)  # ~16 voxels of table
    scene = [view(FRONT)]
    padded = PointCloudPipeline(PointCloudConfig(num_points=64, min_points=4, **small_box)).process(scene)
    assert padded.points_base_m.shape == (64, 3)
    assert 4 <= padded.n_valid < 64 and padded.n_padded == 64 - padded.n_valid
    assert "padded" in padded.reason
    distinct = padded.points_base_m[: padded.n_valid]
    np.testing.assert_array_equal(padded.points_base_m, distinct[np.arange(64) % padded.n_valid])
    skipped = PointCloudPipeline(PointCloudConfig(num_points=64, min_points=4, shortfall="skip", **small_box))
    result = skipped.process(scene)
    assert result.skipped and "skipped" in result.reason


def test_two_cameras_merge_in_the_base_frame():
    config = PointCloudConfig(num_points=512, **CROP)
    pipeline = PointCloudPipeline(config)
    front_only = pipeline.process([view(FRONT, [BOX])])
    merged = pipeline.process([view(FRONT, [BOX]), view(LEFT, [BOX])])
    assert merged.points_base_m.shape == (512, 3)
    np.testing.assert_array_less(-1e-6, merged.points_base_m[:, 2])  # nothing below the table
    # The left camera sees the box's +y face, which the front camera cannot: merged cloud has points on it.
    def on_left_face(p: np.ndarray) -> int:  # inside the +y face, away from its edges
        return int(np.sum((np.abs(p[:, 1] - BOX.max_m[1]) < 0.004) & (p[:, 2] > 0.02) & (p[:, 2] < 0.1)
                          & (p[:, 0] > BOX.min_m[0] + 0.01) & (p[:, 0] < BOX.max_m[0] - 0.01)))

    assert on_left_face(front_only.points_base_m) == 0
    assert on_left_face(merged.points_base_m) > 0
    assert merged.n_valid > front_only.n_valid


def test_open3d_fps_covers_like_the_reference():
    rng = np.random.default_rng(3)
    points = rng.random((3000, 3)).astype(np.float32)
    pipeline = PointCloudPipeline(PointCloudConfig())
    covering = []
    for index in (pipeline.farthest_point_indices(points, 128), farthest_point_indices_numpy(points, 128)):
        assert len(np.unique(index)) == 128
        covering.append(np.linalg.norm(points[:, None] - points[index][None], axis=-1).min(axis=1).max())
    assert covering[0] == pytest.approx(covering[1], rel=0.25)


def test_quaternion_extrinsic():
    half = np.sqrt(0.5)
    transform = transform_from_xyz_quat([0.1, 0.2, 0.3], [0.0, 0.0, half, half])  # +90 deg about z
    np.testing.assert_allclose(transform[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(transform[:3, 3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="quat_xyzw"):
        transform_from_xyz_quat([0, 0, 0], [0, 0, 0, 0])


def test_alignment_keeps_the_nearest_surface():
    depth_k = CameraIntrinsics(8, 6, 8.0, 8.0, 3.5, 2.5)
    depth = np.full((6, 8), 2.0, np.float32)
    depth[2:4, 3:5] = 1.0  # a near object in front of a wall
    shift = np.eye(4)
    out = align_depth_to_color(depth, depth_k, depth_k, shift)
    np.testing.assert_array_equal(out, depth)  # identity is a no-op
    shift[0, 3] = 0.25  # colour camera 0.25 m to the left -> the scene moves right in its image
    out = align_depth_to_color(depth, depth_k, depth_k, shift)
    assert out[2, 5] == pytest.approx(1.0) and out[2, 6] == pytest.approx(1.0)  # object moved by f*tx/z = 2 px
    assert 0 in out[:, :2]  # left edge uncovered: holes stay 0
