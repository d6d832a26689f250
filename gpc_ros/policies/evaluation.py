"""Held-out action error of parents sampled through the GPC core, against trivial baselines.

The policy is sampled exactly as it runs in the graph: ``Composer([parent, ...])`` with the core's sampler
(DDIM for VP parents, flow Euler for flow parents unless given), one chunk per held-out observation window, and
compared with the recorded chunk. Baselines: the mean training chunk (per position and dimension) and "hold the
current state" (every action = the current end-effector state, when actions and states live in the same space).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig
from gpc_ros.policies.chunk_policy import ACTION_KEY, ChunkPolicy
from gpc_ros.policies.dataset import EpisodeDataset
from gpc_ros.policies.encoders.observation import STATE_KEY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionError:
    """Root-mean-square errors over all held-out chunk elements, in action units (m for the reach task)."""

    policy_rmse: float
    mean_chunk_rmse: float
    hold_state_rmse: float
    samples: int

    @property
    def ratio_to_mean(self) -> float:
        """``policy_rmse / mean_chunk_rmse`` (< 1: better than the mean-chunk baseline)."""
        return self.policy_rmse / self.mean_chunk_rmse


def default_sampler(policies: Sequence[ChunkPolicy], steps: int | None = None) -> SamplerConfig:
    """DDIM on the first VP parent's schedule, or flow Euler if every parent is a flow policy."""
    steps = steps or policies[0].config.num_inference_steps
    vp = [p for p in policies if p.policy_type != "flow"]
    if vp:
        cfg = vp[0].config
        return SamplerConfig("ddim", steps, num_train_timesteps=cfg.num_train_timesteps,
                             beta_schedule=cfg.beta_schedule, clip_sample=cfg.clip_sample)
    return SamplerConfig("flow_euler", steps)


def sample_chunks(policies: Sequence[ChunkPolicy], weights: Sequence[float], datasets: Sequence[EpisodeDataset],
                  indices: np.ndarray, sampler: SamplerConfig | None = None, seed: int = 0,
                  batch_size: int = 64) -> np.ndarray:
    """Composed chunks ``(n, H, D)`` (physical units) for the samples ``indices`` of ``datasets`` (one per parent,
    same episodes)."""
    composer = Composer([p.as_parent(f"{p.policy_type}{i}") for i, p in enumerate(policies)],
                        ComposerConfig(sampler=sampler or default_sampler(policies), return_parent_chunks=False))
    out = []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            encodings = composer.encode([ds.batch(chunk) for ds in datasets])
            out.append(composer.compose(encodings, list(weights), generator=generator).actions[0].numpy())
    return np.concatenate(out)


def evaluate(policies: Sequence[ChunkPolicy], weights: Sequence[float], datasets: Sequence[EpisodeDataset],
             mean_chunk: np.ndarray, max_samples: int = 256, sampler: SamplerConfig | None = None,
             seed: int = 0) -> ActionError:
    """RMSE of composed (or single, ``weights=[1]``) chunks vs recorded chunks, beside the baselines."""
    n = min(len(datasets[0]), max_samples)
    indices = np.linspace(0, len(datasets[0]) - 1, n).round().astype(np.int64)
    truth = datasets[0].batch(indices)
    actions = truth[ACTION_KEY]
    predicted = sample_chunks(policies, weights, datasets, indices, sampler, seed)
    hold = (np.repeat(truth[STATE_KEY][:, -1:, :], actions.shape[1], axis=1)
            if STATE_KEY in truth and truth[STATE_KEY].shape[-1] == actions.shape[-1] else np.full_like(actions, np.nan))
    rmse = lambda a: float(np.sqrt(np.mean((a - actions) ** 2)))  # noqa: E731
    result = ActionError(rmse(predicted), rmse(np.broadcast_to(mean_chunk, actions.shape)), rmse(hold), n)
    logger.info("held-out RMSE: policy %.4f, mean chunk %.4f, hold state %.4f (%d samples)", result.policy_rmse,
                result.mean_chunk_rmse, result.hold_state_rmse, n)
    return result


def mean_chunk(dataset: EpisodeDataset, max_samples: int = 4096) -> np.ndarray:
    """Mean recorded chunk ``(H, D)`` over (up to ``max_samples``) training samples."""
    n = min(len(dataset), max_samples)
    indices = np.linspace(0, len(dataset) - 1, n).round().astype(np.int64)
    return dataset.batch(indices)[ACTION_KEY].mean(axis=0)
