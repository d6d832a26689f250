"""The action space of gpc_ros, defined once: what one action vector means and how a chunk of them is executed.

One action (and one proprioceptive state, same layout) is a float vector of ``ACTION_DIM = 10`` numbers:

=========  ======================  ==========================================================================
index      name                    meaning
=========  ======================  ==========================================================================
0..2       ``x, y, z``             fr3_hand_tcp position in fr3_link0 (m)
3..8       ``r11 r21 r31 r12 ..``  orientation of fr3_hand_tcp in fr3_link0 as the continuous 6-D rotation
                                   representation (Zhou et al., CVPR 2019): the first two columns of the
                                   rotation matrix, column 1 then column 2 (``R[:, 0]``, ``R[:, 1]``)
9          ``gripper``             Franka Hand opening width (m), 0 (closed) .. 0.08
=========  ======================  ==========================================================================

Why the 6-D rotation: it is continuous (quaternions have the q / -q double cover, Euler angles wrap), so a
denoiser can regress and average it; :func:`quaternion_from_rotation_6d` maps any 6 numbers back to a rotation
with Gram-Schmidt, so a composed (averaged) action is always executable.

Timing: in a dataset recorded at ``fps`` (10 Hz by default), ``action[t]`` is the target for time ``(t + 1) / fps``
after observation ``t``; a policy chunk ``action[t .. t + H - 1]`` predicted at observation time ``t_obs`` becomes an
:class:`~gpc_ros.control.chunk.ActionChunk` whose step ``i`` is due at ``t_obs + (i + 1) * dt``
(:func:`actions_to_chunk`). This is what the dataset writer, the parents and the chunk conversion share.
"""

from __future__ import annotations

import numpy as np

from gpc_ros.control.chunk import ActionChunk

#: Dimension of one action / state vector.
ACTION_DIM = 10
#: Name of every dimension, in order (stored with datasets).
ACTION_NAMES: tuple[str, ...] = ("x", "y", "z", "r11", "r21", "r31", "r12", "r22", "r32", "gripper")
POSITION = slice(0, 3)
ROTATION_6D = slice(3, 9)
GRIPPER = 9
#: Widest opening of the Franka Hand (m).
GRIPPER_MAX_WIDTH_M = 0.08


def _quat_to_matrix(quat_xyzw: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_xyzw, dtype=np.float64)
    if q.shape[-1] != 4 or not np.all(np.isfinite(q)):
        raise ValueError(f"quaternion must be finite (..., 4) x, y, z, w; got shape {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise ValueError("quaternion must have a non-zero norm")
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions x, y, z, w with w >= 0 (Shepperd's method)."""
    r = np.asarray(rot, dtype=np.float64)
    flat = r.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 4))
    for i, m in enumerate(flat):
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            out[i] = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            out[i] = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
        elif m[1, 1] > m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            out[i] = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
        else:
            s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            out[i] = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    out[out[:, 3] < 0] *= -1.0
    return out.reshape(*r.shape[:-2], 4)


def rotation_6d_from_quaternion(quat_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions x, y, z, w -> (..., 6) first two columns of the rotation matrix."""
    rot = _quat_to_matrix(quat_xyzw)
    return np.concatenate([rot[..., :, 0], rot[..., :, 1]], axis=-1)


def rotation_matrix_from_6d(r6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) rotation: Gram-Schmidt on the two columns (any non-degenerate 6 numbers work)."""
    r6 = np.asarray(r6, dtype=np.float64)
    a, b = r6[..., 0:3], r6[..., 3:6]
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(na < 1e-9):
        raise ValueError("6-D rotation: the first column has zero length")
    c1 = a / na
    b = b - np.sum(c1 * b, axis=-1, keepdims=True) * c1
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    if np.any(nb < 1e-9):
        raise ValueError("6-D rotation: the two columns are parallel")
    c2 = b / nb
    c3 = np.cross(c1, c2)
    return np.stack([c1, c2, c3], axis=-1)


def quaternion_from_rotation_6d(r6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 4) unit quaternions x, y, z, w (w >= 0)."""
    return _matrix_to_quat(rotation_matrix_from_6d(r6))


def pose_to_action(position_m: np.ndarray, quat_xyzw: np.ndarray, gripper_width_m: float | np.ndarray) -> np.ndarray:
    """TCP position(s) (..., 3), orientation(s) (..., 4) and gripper width(s) (...) -> (..., ACTION_DIM) float64."""
    pos = np.asarray(position_m, dtype=np.float64)
    width = np.asarray(gripper_width_m, dtype=np.float64)
    r6 = rotation_6d_from_quaternion(quat_xyzw)
    return np.concatenate([pos, r6, width[..., None]], axis=-1)


def action_to_pose(action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., ACTION_DIM) -> position (..., 3) m, quaternion (..., 4) x, y, z, w, gripper width (...) m."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape[-1] != ACTION_DIM:
        raise ValueError(f"an action has {ACTION_DIM} numbers {ACTION_NAMES}; got shape {a.shape}")
    return a[..., POSITION], quaternion_from_rotation_6d(a[..., ROTATION_6D]), a[..., GRIPPER]


def actions_to_chunk(actions: np.ndarray, observation_time_s: float, dt_s: float,
                     with_gripper: bool = True) -> ActionChunk:
    """A policy chunk ``(H, ACTION_DIM)`` predicted at ``observation_time_s`` -> the driver's :class:`ActionChunk`.

    Step ``i`` is due at ``observation_time_s + (i + 1) * dt_s`` (the dataset's timing: ``action[t]`` is the target
    one period after observation ``t``). Gripper widths are clipped to [0, GRIPPER_MAX_WIDTH_M] and left out with
    ``with_gripper=False``.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != ACTION_DIM:
        raise ValueError(f"actions must have shape (H, {ACTION_DIM}); got {a.shape}")
    pos, quat, width = action_to_pose(a)
    return ActionChunk.from_arrays(
        observation_time_s + dt_s, dt_s, positions_m=pos, quaternions_xyzw=quat,
        gripper_width_m=np.clip(width, 0.0, GRIPPER_MAX_WIDTH_M) if with_gripper else None)
