"""Sim cameras: rendered depth matches the scene geometry (table plane, a cube face) through the published
intrinsics and extrinsics; a renderer that cannot start says so in one sentence."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gpc_ros.sim  # noqa: F401  (MUJOCO_GL before mujoco)
from gpc_ros.sim.cameras import CellRenderer, camera_intrinsics, camera_to_base, camera_to_parent
from gpc_ros.sim.tasks import get_task

TASK = get_task("push_red")
W, H = 160, 120


@pytest.fixture(scope="module")
def renderer():
    import mujoco

    r = CellRenderer(TASK, {"front": (W, H), "wrist": (W, H)})
    m, q = r.model, r.data.qpos.copy()
    for i, value in enumerate(TASK.home_joint_positions_rad):
        q[m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"robot0_fr3_joint{i + 1}")]] = value
    # the red cube square to the camera at (0.50, 0.10), the look-alike out of the way
    for name, pos in (("target", (0.50, 0.10, 0.025)), ("distractor1", (0.45, -0.20, 0.025))):
        a = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_joint")]
        q[a:a + 3], q[a + 3:a + 7] = pos, (1.0, 0.0, 0.0, 0.0)
    r.set_state(q)
    yield r
    r.close()


def _project(points_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame points -> (pixel (u, v), depth z) through the published intrinsics and extrinsics."""
    k = camera_intrinsics("front", W, H)
    t = camera_to_parent("front")
    cam = (points_base - t[:3, 3]) @ t[:3, :3]
    uv = np.stack([k.fx * cam[:, 0] / cam[:, 2] + k.cx, k.fy * cam[:, 1] / cam[:, 2] + k.cy], axis=1)
    return uv, cam[:, 2]


def test_front_camera_pose_agrees_with_the_renderers_camera(renderer):
    np.testing.assert_allclose(renderer.camera_pose("front"), camera_to_parent("front"), atol=1e-9)
    xyz, quat = camera_to_base("front")
    from gpc_ros.perception.pointcloud import transform_from_xyz_quat

    np.testing.assert_allclose(transform_from_xyz_quat(xyz, quat), camera_to_parent("front"), atol=1e-9)


def test_table_plane_depth_matches_geometry(renderer):
    frame = renderer.render("front")
    k = camera_intrinsics("front", W, H)
    t = camera_to_parent("front")
    # every pixel of the bottom rows looks at the bare table (x > 0.65 m): intersect its ray with z = 0
    v, u = np.mgrid[H - 20:H, 0:W]
    rays_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, float)], axis=-1)
    rays_base = rays_cam @ t[:3, :3].T
    depth_expected = -t[2, 3] / rays_base[..., 2]  # z along the optical axis, ray z-component = 1
    np.testing.assert_allclose(frame.depth_m[H - 20:], depth_expected, atol=0.002)


def test_cube_faces_depth_matches_geometry(renderer):
    frame = renderer.render("front")
    # points on the face turned to the camera (x = 0.525) and on the top face (z = 0.05) of the red cube
    face = np.array([[0.525, 0.10 + dy, z] for dy in (-0.012, 0.0, 0.012) for z in (0.012, 0.025, 0.038)])
    top = np.array([[0.50 + dx, 0.10 + dy, 0.05] for dx in (-0.01, 0.01) for dy in (-0.01, 0.01)])
    for points in (face, top):
        uv, z = _project(points)
        measured = frame.depth_m[np.round(uv[:, 1]).astype(int), np.round(uv[:, 0]).astype(int)]
        # a pixel covers ~4 mm here; the face is flat along the view, so its depth varies little across a pixel
        np.testing.assert_allclose(measured, z, atol=0.004)
    px = np.round(_project(face[4:5])[0][0]).astype(int)
    r, g, b = frame.rgb[px[1], px[0]].astype(int)
    assert r > 60 and r > 2 * g and r > 2 * b  # the red cube is red (its face turned away from the light is darker)


def test_the_policy_cloud_tells_the_red_cube_from_its_look_alike_by_colour(renderer):
    from gpc_ros.sim.observation import CloudBuilder

    frame = renderer.render("front", depth=True)
    cloud = CloudBuilder(camera_intrinsics("front", W, H), camera_to_parent("front"))(frame.depth_m, frame.rgb)
    assert cloud.shape == (512, 6) and cloud.dtype == np.float32
    assert cloud[:, 3:].min() >= 0.0 and cloud[:, 3:].max() <= 1.0
    xyz, rgb = cloud[:, :3], cloud[:, 3:]
    for centre, colour in (((0.50, 0.10), 0), ((0.45, -0.20), 2)):  # red cube (red), look-alike (blue)
        on = np.linalg.norm(xyz[:, :2] - centre, axis=1) < 0.03
        assert on.sum() >= 10
        dominant = np.argmax(rgb[on], axis=1)
        assert np.mean(dominant == colour) > 0.9, (centre, rgb[on].mean(0))
    # without colour the xyz columns are the same points (colour does not change the sampling) and rgb is 0
    bare = CloudBuilder(camera_intrinsics("front", W, H), camera_to_parent("front"))(frame.depth_m)
    np.testing.assert_array_equal(bare[:, :3], xyz)
    assert not bare[:, 3:].any()


def test_wrist_camera_moves_with_the_hand(renderer):
    pose = renderer.camera_pose("wrist")
    assert pose[2, 3] > 0.15  # above the table with the arm at home (TCP at 0.18 m)
    assert pose[2, 2] < -0.5  # looking down
    frame = renderer.render("wrist", depth=True)
    assert frame.rgb.shape == (H, W, 3) and np.all(frame.depth_m > 0.05)


def test_a_renderer_that_cannot_start_says_so():
    code = ("from gpc_ros.sim.cameras import CellRenderer\nfrom gpc_ros.sim.tasks import get_task\n"
            "CellRenderer(get_task('push_red'), {'front': (64, 48)})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "RendererError: the MuJoCo renderer cannot start with MUJOCO_GL='osmesa'" in last, proc.stderr[-2000:]
