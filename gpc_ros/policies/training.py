"""Training a parent policy: AdamW + cosine schedule, EMA, validation loss, checkpoint and exact resume.

Reproducibility: the batch order of epoch ``e`` is a permutation drawn from ``(seed, e)`` and the noise/time draws
of step ``s`` from a generator seeded with ``(seed, s)``; model, optimiser, LR schedule and EMA states are saved in
``training_state.pt``. Resuming from a checkpoint therefore continues exactly as an uninterrupted run would (same
weights bit for bit on the same machine and thread count; tested).

Output directory::

    out/
      checkpoint/               the policy (EMA weights): model.safetensors + config.json (load_policy reads it)
        training_state.pt       raw weights, optimiser, LR schedule, EMA, step, loss history (for --resume)
      train_log.jsonl           one line per validation: step, train loss, val loss, lr
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.policies.checkpoint import load_policy, save_policy
from gpc_ros.policies.chunk_policy import ACTION_KEY, ChunkPolicy, ChunkPolicyConfig
from gpc_ros.policies.dataset import EpisodeDataset, split_episodes
from gpc_ros.policies.ema import EMA
from gpc_ros.policies.encoders.observation import STATE_KEY
from gpc_ros.policies.factory import make_policy
from gpc_ros.policies.normalization import fit_min_max

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
TRAINING_STATE = "training_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    # --- data
    val_fraction: float = 0.1
    """Last fraction of the episodes held out for the validation loss."""
    dataset_keys: dict[str, str] = field(default_factory=dict)
    """LeRobot datasets: parent input -> dataset feature, e.g. ``{"observation.image":
    "observation.images.front"}`` (unmapped inputs use the feature of the same name; see
    :mod:`gpc_ros.policies.lerobot.training_data`)."""
    # --- optimisation
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    grad_clip_norm: float = 1.0
    ema_max_decay: float = 0.995
    # --- bookkeeping
    val_every: int = 250
    checkpoint_every: int = 500
    max_val_samples: int = 512
    seed: int = 0
    num_threads: int = 0
    """torch intra-op threads (0 = leave torch's default)."""
    progress: bool = True
    """Show a tqdm progress bar."""
    action_normalization_from: str = ""
    """A checkpoint (folder or shipped name) whose action normalisation this run uses instead of fitting its own
    (GPC composes only parents with the same action normalisation; "" = min-max of this training set)."""

    def __post_init__(self) -> None:
        if not isinstance(self.action_normalization_from, str):
            raise ValueError(f"TrainConfig.action_normalization_from must be a checkpoint folder or shipped name "
                             f"(str); got {self.action_normalization_from!r}")
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "max_val_samples"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"TrainConfig.{name} must be an int >= 1; got {value!r}")
        from gpc_ros.policies.lerobot.training_data import PARENT_KEYS

        if not isinstance(self.dataset_keys, dict) or any(
                k not in PARENT_KEYS or not isinstance(v, str) or not v for k, v in self.dataset_keys.items()):
            raise ValueError(f"TrainConfig.dataset_keys must map parent inputs {PARENT_KEYS} to dataset feature "
                             f"names; got {self.dataset_keys!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1); got {self.val_fraction}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0; got {self.lr}")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"TrainConfig.warmup_steps must be an int >= 0; got {self.warmup_steps!r}")
        if not 0.0 <= self.ema_max_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_max_decay must be in [0, 1); got {self.ema_max_decay}")
        if not (isinstance(self.num_threads, int) and self.num_threads >= 0):
            raise ValueError(f"TrainConfig.num_threads must be an int >= 0; got {self.num_threads!r}")


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{step}".encode()))


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def shared_action_normalization(checkpoint: str, action_dim: int, actions: np.ndarray) -> ActionNormalization:
    """The action normalisation of ``checkpoint`` (to compose with it), checked against this run's action size.

    Logs how far this training set's actions fall outside that parent's normalised range [-1, 1].
    """
    from gpc_ros.policies.registry import resolve_checkpoint

    try:
        norm = load_policy(resolve_checkpoint(checkpoint)).action_normalization
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ValueError(f"TrainConfig.action_normalization_from {checkpoint!r} cannot be loaded: {exc}") from None
    if len(norm.offset) != action_dim:
        raise ValueError(f"TrainConfig.action_normalization_from {checkpoint!r} normalises {len(norm.offset)}-D "
                         f"actions; this run's actions are {action_dim}-D")
    normalized = np.asarray(norm.normalize(torch.as_tensor(np.asarray(actions, np.float32))))
    logger.info("action normalisation from %s: this training set spans [%.3f, %.3f] in its normalised space",
                checkpoint, float(normalized.min()), float(normalized.max()))
    return norm


class Trainer:
    """Trains one policy on an :class:`EpisodeDataset` directory; ``run()`` returns the EMA policy."""

    def __init__(self, policy_type: str, policy_config: ChunkPolicyConfig, dataset_dir: str | os.PathLike,
                 output_dir: str | os.PathLike, config: TrainConfig = TrainConfig()) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        obs = policy_config.observation
        keys = obs.expected_keys
        from gpc_ros.policies.lerobot.reader import LeRobotReader, is_lerobot_dataset
        from gpc_ros.policies.lerobot.training_data import num_episodes, open_dataset

        # a LeRobot folder is validated once, completely (videos included), before anything trains or is written
        reader = LeRobotReader(dataset_dir) if is_lerobot_dataset(dataset_dir) else None
        image_size = obs.image.image_size if obs.modality == "image" else None
        train_eps, val_eps = split_episodes(reader.num_episodes if reader else num_episodes(dataset_dir),
                                            config.val_fraction)

        def subset(episodes: list[int]) -> EpisodeDataset:
            return open_dataset(dataset_dir, keys, obs.obs_horizon, policy_config.action_horizon, episodes,
                                config.dataset_keys, image_size, reader)

        self.train_set = subset(train_eps)
        self.val_set = subset(val_eps) if val_eps else None
        if len(self.train_set) < config.batch_size:
            raise ValueError(f"TrainConfig.batch_size {config.batch_size} exceeds the {len(self.train_set)} "
                             f"training samples")
        action_norm = (shared_action_normalization(config.action_normalization_from, policy_config.action_dim,
                                                   self.train_set.values(ACTION_KEY))
                       if config.action_normalization_from else fit_min_max(self.train_set.values(ACTION_KEY)))
        state_norm = fit_min_max(self.train_set.values(STATE_KEY)) if obs.state_dim else None
        torch.manual_seed(config.seed)  # weight initialisation
        self.policy: ChunkPolicy = make_policy(policy_type, policy_config, action_norm, state_norm)
        self.ema = EMA(self.policy, config.ema_max_decay)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _lr_lambda(config.warmup_steps, config.steps))
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.steps_per_epoch = len(self.train_set) // config.batch_size

    # ------------------------------------------------------------------ state
    def save(self) -> Path:
        """Write the EMA policy and the full training state to ``output_dir/checkpoint``."""
        directory = self.output_dir / CHECKPOINT_DIR
        save_policy(self.ema.model, directory, extra={
            "step": self.step, "train_config": asdict(self.config), "dataset": str(self.train_set.directory),
            "train_episodes": len(self.train_set.episodes),
            "last_val_loss": next((h["val_loss"] for h in reversed(self.history) if "val_loss" in h), None)})
        state = {"step": self.step, "model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict(), "history": self.history,
                 "train_config": asdict(self.config)}
        tmp = directory / (TRAINING_STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, directory / TRAINING_STATE)
        return directory

    def resume(self, directory: str | os.PathLike | None = None) -> None:
        """Continue from ``directory`` (default ``output_dir/checkpoint``); the step count carries on."""
        directory = Path(directory) if directory is not None else self.output_dir / CHECKPOINT_DIR
        saved = load_policy(directory)  # validates config/weights
        if saved.config != self.policy.config:
            raise ValueError(f"cannot resume from {directory}: its policy config differs from this run's "
                             f"({saved.config} vs {self.policy.config})")
        state = torch.load(directory / TRAINING_STATE, map_location="cpu", weights_only=True)
        mine, theirs = asdict(self.config), dict(state["train_config"])
        for key in ("progress", "num_threads", "val_every", "checkpoint_every"):
            mine.pop(key), theirs.pop(key, None)
        theirs.setdefault("dataset_keys", {})  # saved before the field existed
        if mine != theirs:
            diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
            raise ValueError(f"cannot resume from {directory}: training config differs (saved, now): {diff}")
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        logger.info("resumed from %s at step %d", directory, self.step)

    # ------------------------------------------------------------------ loop
    def batch_indices(self, step: int) -> np.ndarray:
        """The training-set indices of batch ``step``: a seeded permutation per epoch, ``(batch_size,)`` int."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_set))
        bs = self.config.batch_size
        return order[position * bs:(position + 1) * bs]

    def train_step(self) -> float:
        """One optimizer step (clipped gradients, scheduler, EMA update); returns the batch loss."""
        self.policy.train()
        batch = self.train_set.batch(self.batch_indices(self.step))
        loss = self.policy.compute_loss(batch, _step_generator(self.config.seed, self.step))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.policy)
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def validation_loss(self, policy: ChunkPolicy | None = None) -> float:
        """Mean loss of ``policy`` (default: the EMA model) on the held-out episodes with fixed noise draws."""
        if self.val_set is None:
            return float("nan")
        policy = policy or self.ema.model
        policy.eval()
        n = min(len(self.val_set), self.config.max_val_samples)
        indices = np.linspace(0, len(self.val_set) - 1, n).round().astype(np.int64)
        generator = _step_generator(self.config.seed, -1)
        total = 0.0
        for start in range(0, n, self.config.batch_size):
            chunk = indices[start:start + self.config.batch_size]
            total += float(policy.compute_loss(self.val_set.batch(chunk), generator)) * len(chunk)
        return total / n

    def run(self, stop_at: int | None = None) -> ChunkPolicy:
        """Train until ``config.steps``; validate and checkpoint on schedule and at the end.

        Args:
            stop_at: Stop earlier, after step ``stop_at``, with a checkpoint. The run stays the one planned for
                ``config.steps`` (same LR schedule), so resuming it later continues exactly.

        Returns:
            The EMA policy.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        end = cfg.steps if stop_at is None else min(cfg.steps, int(stop_at))
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress,
                   desc=f"train {self.policy.policy_type}", unit="step", dynamic_ncols=True)
        running: list[float] = []
        try:
            while self.step < end:
                running.append(self.train_step())
                bar.update(1)
                last = self.step == end
                if self.step % cfg.val_every == 0 or last:
                    entry = {"step": self.step, "train_loss": float(np.mean(running)),
                             "val_loss": self.validation_loss(), "lr": self.scheduler.get_last_lr()[0]}
                    running.clear()
                    self.history.append(entry)
                    with (self.output_dir / LOG_FILE).open("a") as f:
                        f.write(json.dumps(entry) + "\n")
                    bar.set_postfix(train=f"{entry['train_loss']:.4f}", val=f"{entry['val_loss']:.4f}")
                    logger.info("step %d: train loss %.5f, val loss %.5f", self.step, entry["train_loss"],
                                entry["val_loss"])
                if self.step % cfg.checkpoint_every == 0 or last:
                    self.save()
        finally:
            bar.close()
        return self.ema.model

