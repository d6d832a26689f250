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


def sample_chunks(policies: Sequence[ChunkPolicy], weights: Sequence[float] | np.ndarray,
                  datasets: Sequence[EpisodeDataset], indices: np.ndarray, sampler: SamplerConfig | None = None,
                  seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Composed chunks (physical units) for the samples ``indices`` of ``datasets`` (one per parent, same episodes).

    Returns:
        ``(n, H, D)`` for one weight vector ``(K,)``, ``(N, n, H, D)`` for ``N`` candidates ``(N, K)`` (all
        candidates in the same forward passes, from the same noise).
    """
    composer = Composer([p.as_parent(f"{p.policy_type}{i}") for i, p in enumerate(policies)],
                        ComposerConfig(sampler=sampler or default_sampler(policies), return_parent_chunks=False))
    out = []
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            encodings = composer.encode([ds.batch(chunk) for ds in datasets])
            out.append(composer.compose(encodings, np.asarray(weights, dtype=np.float64).tolist(),
                                        generator=generator).actions.numpy())
    chunks = np.concatenate(out, axis=1)
    return chunks if np.ndim(weights) == 2 else chunks[0]


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
            if STATE_KEY in truth and truth[STATE_KEY].shape[-1] == actions.shape[-1]
            else np.full_like(actions, np.nan))
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


def main(argv: list[str] | None = None) -> int:
    """Print the held-out RMSE of the (composed) checkpoints on the dataset's validation episodes.

    ``python -m gpc_ros.policies.evaluation --checkpoint A [--checkpoint B ...] --weights ... --dataset D``.
    """
    import argparse
    import json
    from pathlib import Path

    from gpc_ros.policies.checkpoint import load_policy
    from gpc_ros.policies.dataset import META_FILE, split_episodes

    parser = argparse.ArgumentParser(prog="python -m gpc_ros.policies.evaluation", description=main.__doc__)
    parser.add_argument("--checkpoint", action="append", required=True, type=Path, help="policy checkpoint dir")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per checkpoint (default: equal)")
    parser.add_argument("--grid", action="store_true",
                        help="two checkpoints: evaluate the paper's 11 weights (0, 1), (0.1, 0.9) ... (1, 0) at once")
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as in training: the last episodes")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="sampler steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    policies = [load_policy(c) for c in args.checkpoint]
    weights = args.weights or [1.0 / len(policies)] * len(policies)
    if len(weights) != len(policies):
        parser.error(f"--weights needs {len(policies)} values (one per --checkpoint); got {len(weights)}")
    num_episodes = json.loads((args.dataset / META_FILE).read_text())["num_episodes"]
    train_eps, val_eps = split_episodes(num_episodes, args.val_fraction)

    def windows(policy: ChunkPolicy, episodes: list[int]) -> EpisodeDataset:
        obs = policy.config.observation
        return EpisodeDataset(args.dataset, obs.expected_keys, obs.obs_horizon, policy.config.action_horizon,
                              episodes)

    mean = mean_chunk(windows(policies[0], train_eps))
    if args.grid:
        if len(policies) != 2:
            parser.error(f"--grid needs exactly 2 --checkpoint; got {len(policies)}")
        val = [windows(p, val_eps) for p in policies]
        n = min(len(val[0]), args.samples)
        indices = np.linspace(0, len(val[0]) - 1, n).round().astype(np.int64)
        truth = val[0].batch(indices)[ACTION_KEY]
        grid = np.array([[w, 1.0 - w] for w in np.linspace(0.0, 1.0, 11)])
        chunks = sample_chunks(policies, grid, val, indices, default_sampler(policies, args.steps), args.seed)
        for w, chunk in zip(grid, chunks):
            rmse = float(np.sqrt(np.mean((chunk - truth) ** 2)))
            print(f"w = ({w[0]:.1f}, {w[1]:.1f}): held-out action RMSE {rmse:.4f}")
        return 0
    err = evaluate(policies, weights, [windows(p, val_eps) for p in policies], mean, args.samples,
                   default_sampler(policies, args.steps), args.seed)
    names = " + ".join(f"{w:g} x {c}" for w, c in zip(weights, args.checkpoint))
    print(f"{names}: held-out action RMSE {err.policy_rmse:.4f} (mean-chunk baseline {err.mean_chunk_rmse:.4f}, "
          f"hold-state baseline {err.hold_state_rmse:.4f}, {err.samples} chunks, {args.steps} sampler steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
