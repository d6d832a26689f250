"""Tiny models and a tiny synthetic dataset for the policy tests (one torch thread: the machine is shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpc_ros.policies.dataset import write_episodes
from gpc_ros.policies.encoders.observation import random_observation
from gpc_ros.policies.presets import policy_config
from gpc_ros.policies.synthetic import ReachTaskConfig, make_episode

TINY_TASK = ReachTaskConfig(episode_length=20, image_size=32, num_points=64)
TINY_KEYS = {"action": [3], "observation.state": [3], "observation.image": [32, 32, 3],
             "observation.pointcloud": [64, 3]}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(policy_type: str, **kwargs):
    return policy_config(policy_type, "tiny", TINY_KEYS, **kwargs)


def write_tiny_dataset(directory: Path, episodes: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_episodes(directory, (make_episode(rng, TINY_TASK) for _ in range(episodes)), 10.0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 synthetic episodes of 20 steps (32x32 images, 64-point clouds)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("reach") / "data", 8)


def observation(config, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A random observation window that matches ``config.observation``."""
    return random_observation(config.observation, batch, seed)
