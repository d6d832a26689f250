"""The action space: 6-D rotation round trips, Gram-Schmidt of a perturbed (composed) action, chunk timing."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.action_space import (
    ACTION_DIM,
    action_to_pose,
    actions_to_chunk,
    pose_to_action,
    quaternion_from_rotation_6d,
    rotation_6d_from_quaternion,
)


def _random_quats(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


def test_quaternion_6d_round_trip_is_the_same_rotation():
    q = _random_quats(200)
    back = quaternion_from_rotation_6d(rotation_6d_from_quaternion(q))
    # q and -q are one rotation: compare |<q, q'>| = 1
    np.testing.assert_allclose(np.abs(np.sum(q * back, axis=1)), 1.0, atol=1e-9)
    assert np.all(back[:, 3] >= 0)


def test_hand_pointing_down_is_the_documented_6d_vector():
    # 180 deg about x: R = diag(1, -1, -1) -> columns (1, 0, 0) and (0, -1, 0)
    np.testing.assert_allclose(rotation_6d_from_quaternion(np.array([1.0, 0, 0, 0])), [1, 0, 0, 0, -1, 0], atol=1e-12)


def test_averaged_6d_rotations_map_back_to_a_rotation():
    q = _random_quats(2, seed=3)
    mean = rotation_6d_from_quaternion(q).mean(axis=0)  # what a convex composition of two chunks produces
    from gpc_ros.action_space import rotation_matrix_from_6d

    r = rotation_matrix_from_6d(mean)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero length"):
        rotation_matrix_from_6d(np.zeros(6))


def test_actions_to_chunk_timing_positions_and_gripper():
    pos = np.array([[0.4, 0.0, 0.2], [0.41, 0.01, 0.19], [0.42, 0.02, 0.18]])
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (3, 1))
    actions = pose_to_action(pos, quat, np.array([0.0, 0.04, 0.2]))
    assert actions.shape == (3, ACTION_DIM)
    chunk = actions_to_chunk(actions, observation_time_s=5.0, dt_s=0.1)
    assert chunk.start_time_s == pytest.approx(5.1)  # action[t] is due one period after observation t
    assert chunk.dt_s == pytest.approx(0.1)
    np.testing.assert_allclose(chunk.positions_m, pos)
    np.testing.assert_allclose(np.abs(chunk.quaternions_xyzw[:, 0]), 1.0)
    np.testing.assert_allclose(chunk.gripper_width_m, [0.0, 0.04, 0.08])  # clipped to the hand's range
    p, q, w = action_to_pose(actions[1])
    np.testing.assert_allclose(p, pos[1])
    assert w == pytest.approx(0.04)
    with pytest.raises(ValueError, match=r"shape \(H, 10\)"):
        actions_to_chunk(actions[:, :9], 0.0, 0.1)
