"""Coloured point clouds (xyz + rgb, the cell's and pointcloud_node's layout) through the parents and the host.

An ``xyz`` parent (``point_dim`` 3, the step-3,000 shipped point-cloud parents) must predict exactly what it did
before the cell's cloud gained colour columns; an ``xyzrgb`` parent (``point_dim`` 6) must actually read the colour;
a policy host fits a received cloud to what its parent reads and refuses, in one sentence, a colourless cloud for a
colour parent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.graph.host import Observing, cloud_frame, fit_cloud
from gpc_ros.policies.factory import make_policy
from gpc_ros.policies.presets import policy_config

N = 64  # the tiny preset's points


def _keys(point_dim: int) -> dict[str, list[int]]:
    return {"action": [10], "observation.state": [10], "observation.pointcloud": [N, point_dim]}


def _policy(point_dim: int):
    torch.manual_seed(0)
    norm = ActionNormalization.min_max(np.full(10, -1.0), np.ones(10))
    return make_policy("dp3", policy_config("dp3", "tiny", _keys(point_dim)), norm, norm).eval()


def _window(rng: np.random.Generator) -> dict[str, np.ndarray]:
    xyz = rng.uniform(0.0, 0.6, (2, N, 3)).astype(np.float32)
    rgb = rng.uniform(0.0, 1.0, (2, N, 3)).astype(np.float32)
    return {"observation.pointcloud": np.concatenate([xyz, rgb], -1),
            "observation.state": rng.uniform(-1, 1, (2, 10)).astype(np.float32)}


def test_an_xyz_parent_reads_the_xyz_columns_of_a_coloured_cloud_exactly():
    policy = _policy(3)
    window = _window(np.random.default_rng(0))
    xyz_only = dict(window, **{"observation.pointcloud": window["observation.pointcloud"][..., :3].copy()})
    with torch.no_grad():
        assert torch.equal(policy.encode(window), policy.encode(xyz_only))
    with pytest.raises(ValueError, match=r"observation\['observation.pointcloud'\] must have shape \(B, 2, 64, 3\)"):
        policy.encode(dict(window, **{"observation.pointcloud": window["observation.pointcloud"][..., :4]}))


def test_an_xyzrgb_parent_reads_the_colour():
    policy = _policy(6)
    window = _window(np.random.default_rng(1))
    recoloured = window["observation.pointcloud"].copy()
    recoloured[..., 3:] = recoloured[..., 3:][..., ::-1]  # same points, red and blue swapped
    with torch.no_grad():
        a = policy.encode(window)
        b = policy.encode(dict(window, **{"observation.pointcloud": recoloured}))
    assert float((a - b).abs().max()) > 1e-3
    with pytest.raises(ValueError, match=r"must have shape \(B, 2, 64, 6\)"):
        policy.encode(dict(window, **{"observation.pointcloud": window["observation.pointcloud"][..., :3]}))


def test_a_host_fits_a_received_cloud_to_what_its_parent_reads():
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 1, (200, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    colour_parent = Observing("pointcloud", 2, 10, num_points=N, point_dim=6)
    xyz_parent = Observing("pointcloud", 2, 10, num_points=N, point_dim=3)
    frame = cloud_frame(points, colours, colour_parent)
    assert frame.shape == (N, 6) and frame.dtype == np.float32
    index = np.linspace(0, 199, N).round().astype(int)
    np.testing.assert_array_equal(frame[:, :3], points[index])
    np.testing.assert_allclose(frame[:, 3:] * 255.0, colours[index], atol=1e-4)
    np.testing.assert_array_equal(cloud_frame(points, colours, xyz_parent), points[index])
    np.testing.assert_array_equal(cloud_frame(points, None, xyz_parent), points[index])
    with pytest.raises(ValueError, match="reads coloured points .point_dim 6. but the cloud has no rgb field; "
                                         "run pointcloud_node with with_color:=true"):
        cloud_frame(points, None, colour_parent)
    np.testing.assert_array_equal(fit_cloud(frame, xyz_parent), frame[:, :3])
