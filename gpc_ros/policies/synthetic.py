"""A synthetic reaching task whose observation determines a smooth action chunk (until real demos exist).

A 5 cm block lies on the table at a random ``(x, y)``; the end effector starts at a random position and moves to a
point ``approach_height_m`` above the block with a proportional, speed-limited controller::

    p_{t+1} = p_t + clip_norm(gain * (target - p_t), max_step_m)

Everything is in the base frame ``fr3_link0`` (m). Per step ``t`` (``dt_s`` apart) an episode stores

* ``action`` ``(T, 3)``: the next end-effector position target ``p_{t+1}`` (m);
* ``observation.state`` ``(T, 3)``: the end-effector position ``p_t`` (m);
* ``observation.image`` ``(T, S, S, 3)`` uint8: a top-down orthographic view of the table, the red block and the
  blue end-effector disc (whose radius grows with height);
* ``observation.pointcloud`` ``(T, N, 3)`` float32: points sampled on the table plane and on the block's faces
  (m), with a little noise, re-sampled every frame.

So the image (block and end effector) and the cloud + state each determine the action chunk exactly: a policy that
learned the task beats the mean-chunk baseline by a wide margin (see docs/policies.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpc_ros.policies.chunk_policy import ACTION_KEY
from gpc_ros.policies.encoders.observation import IMAGE_KEY, POINTCLOUD_KEY, STATE_KEY


@dataclass(frozen=True)
class ReachTaskConfig:
    """The synthetic scene and expert."""

    episode_length: int = 40
    dt_s: float = 0.1
    image_size: int = 96
    num_points: int = 512
    block_size_m: float = 0.05
    block_x_range_m: tuple[float, float] = (0.40, 0.60)
    block_y_range_m: tuple[float, float] = (-0.15, 0.15)
    start_x_range_m: tuple[float, float] = (0.30, 0.70)
    start_y_range_m: tuple[float, float] = (-0.25, 0.25)
    start_z_range_m: tuple[float, float] = (0.15, 0.35)
    approach_height_m: float = 0.08
    gain: float = 0.15
    max_step_m: float = 0.02
    view_x_range_m: tuple[float, float] = (0.25, 0.75)
    """Image rows cover this x range (far side at the top)."""
    view_y_range_m: tuple[float, float] = (-0.30, 0.30)
    """Image columns cover this y range."""
    point_noise_m: float = 0.002

    def __post_init__(self) -> None:
        if not (isinstance(self.episode_length, int) and self.episode_length >= 2):
            raise ValueError(f"ReachTaskConfig.episode_length must be an int >= 2; got {self.episode_length!r}")
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 96):
            raise ValueError(f"ReachTaskConfig.image_size must be an int in [16, 96]; got {self.image_size!r}")
        if not (isinstance(self.num_points, int) and self.num_points >= 64):
            raise ValueError(f"ReachTaskConfig.num_points must be an int >= 64; got {self.num_points!r}")


def expert_trajectory(start_m: np.ndarray, block_m: np.ndarray, config: ReachTaskConfig) -> np.ndarray:
    """End-effector positions ``(T + 1, 3)`` from ``start_m`` toward the point above ``block_m`` (m)."""
    target = np.array([block_m[0], block_m[1], config.block_size_m + config.approach_height_m])
    path = [np.asarray(start_m, dtype=np.float64)]
    for _ in range(config.episode_length):
        step = config.gain * (target - path[-1])
        norm = np.linalg.norm(step)
        if norm > config.max_step_m:
            step *= config.max_step_m / norm
        path.append(path[-1] + step)
    return np.stack(path)


def render_top_view(block_m: np.ndarray, ee_m: np.ndarray, config: ReachTaskConfig) -> np.ndarray:
    """``(S, S, 3)`` uint8 top-down image of the table, block (red) and end effector (blue disc)."""
    s = config.image_size
    (x0, x1), (y0, y1) = config.view_x_range_m, config.view_y_range_m
    rows = x1 - (np.arange(s) + 0.5) / s * (x1 - x0)  # x of each row centre (m)
    cols = y0 + (np.arange(s) + 0.5) / s * (y1 - y0)  # y of each column centre (m)
    xx, yy = np.meshgrid(rows, cols, indexing="ij")
    image = np.empty((s, s, 3), dtype=np.float64)
    image[...] = (0.55, 0.5, 0.45)
    image += 0.05 * ((np.floor(xx / 0.05) + np.floor(yy / 0.05)) % 2)[..., None]  # table tiles
    half = config.block_size_m / 2
    block = (np.abs(xx - block_m[0]) <= half) & (np.abs(yy - block_m[1]) <= half)
    image[block] = (0.85, 0.1, 0.1)
    radius = 0.015 + 0.05 * float(ee_m[2])
    disc = (xx - ee_m[0]) ** 2 + (yy - ee_m[1]) ** 2 <= radius ** 2
    image[disc] = (0.1, 0.2, 0.9)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def sample_point_cloud(block_m: np.ndarray, config: ReachTaskConfig, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` float32 points (m): 60 % on the table plane in view, 40 % on the block's top and sides."""
    n = config.num_points
    n_block = int(0.4 * n)
    n_table = n - n_block
    table = np.column_stack([rng.uniform(*config.view_x_range_m, n_table), rng.uniform(*config.view_y_range_m,
                                                                                        n_table), np.zeros(n_table)])
    half, size = config.block_size_m / 2, config.block_size_m
    face = rng.integers(0, 5, n_block)  # 0 = top, 1..4 = sides
    u, v = rng.uniform(-half, half, n_block), rng.uniform(0.0, size, n_block)
    local = np.column_stack([u, rng.uniform(-half, half, n_block), np.full(n_block, size)])
    for k, (axis, sign) in enumerate(((0, 1), (0, -1), (1, 1), (1, -1)), start=1):
        sel = face == k
        local[sel, axis] = sign * half
        local[sel, 1 - axis] = u[sel]
        local[sel, 2] = v[sel]
    block = local + np.array([block_m[0], block_m[1], 0.0])
    points = np.concatenate([table, block]) + rng.normal(0.0, config.point_noise_m, (n, 3))
    return points[rng.permutation(n)].astype(np.float32)


def make_episode(rng: np.random.Generator, config: ReachTaskConfig = ReachTaskConfig()) -> dict[str, np.ndarray]:
    """One episode as a dict of ``(T, ...)`` arrays (keys ``action`` and ``observation.*``)."""
    block = np.array([rng.uniform(*config.block_x_range_m), rng.uniform(*config.block_y_range_m)])
    start = np.array([rng.uniform(*config.start_x_range_m), rng.uniform(*config.start_y_range_m),
                      rng.uniform(*config.start_z_range_m)])
    path = expert_trajectory(start, block, config)
    states, actions = path[:-1], path[1:]
    return {
        ACTION_KEY: actions.astype(np.float32),
        STATE_KEY: states.astype(np.float32),
        IMAGE_KEY: np.stack([render_top_view(block, p, config) for p in states]),
        POINTCLOUD_KEY: np.stack([sample_point_cloud(block, config, rng) for _ in states]),
    }
