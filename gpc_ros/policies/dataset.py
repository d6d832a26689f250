"""Episodes on disk (one compressed ``.npz`` per episode) and the training windows drawn from them.

Layout of a dataset directory (documented in docs/policies.md)::

    dataset/
      dataset.json             {"format": "gpc_ros.episodes", "format_version": 1, "fps": 10.0,
                                "keys": {"action": [3], "observation.state": [3], ...}, "num_episodes": N, ...}
      episode_000000.npz       arrays (T, ...) per key, all with the same T (this episode's length)
      episode_000001.npz
      ...

A sample at step ``t`` of an episode is the observation window ``t - T_obs + 1 .. t`` (the first frame repeated
before the episode starts) and the action chunk ``t .. t + H - 1`` (the last action repeated after the end), as
Diffusion Policy pads. Everything is loaded into memory (the synthetic and demo datasets are small); batches are
gathered with vectorised indexing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpc_ros.policies.chunk_policy import ACTION_KEY

logger = logging.getLogger(__name__)

FORMAT = "gpc_ros.episodes"
FORMAT_VERSION = 1
META_FILE = "dataset.json"


def episode_path(directory: Path, index: int) -> Path:
    """The file of episode ``index`` in ``directory`` (``episode_000042.npz``)."""
    return directory / f"episode_{index:06d}.npz"


def write_episodes(directory: str | os.PathLike, episodes: Iterable[Mapping[str, np.ndarray]], fps: float,
                   info: Mapping[str, Any] | None = None) -> Path:
    """Write episodes (dicts of ``(T, ...)`` arrays with the same keys) and ``dataset.json``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    keys: dict[str, list[int]] | None = None
    count = 0
    for count, episode in enumerate(episodes, start=1):
        lengths = {k: len(v) for k, v in episode.items()}
        if ACTION_KEY not in episode or len(set(lengths.values())) != 1:
            raise ValueError(f"episode {count - 1}: needs an {ACTION_KEY!r} array and equal lengths; got {lengths}")
        shapes = {k: list(np.shape(v)[1:]) for k, v in episode.items()}
        if keys is None:
            keys = shapes
        elif shapes != keys:
            raise ValueError(f"episode {count - 1} has keys/shapes {shapes}; earlier episodes have {keys}")
        np.savez_compressed(episode_path(out, count - 1), **{k: np.asarray(v) for k, v in episode.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fps": float(fps), "keys": keys or {},
            "num_episodes": count, "info": dict(info or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("wrote %d episodes to %s", count, out)
    return out


class EpisodeDataset:
    """Training windows over some episodes of a dataset directory."""

    def __init__(self, directory: str | os.PathLike, keys: Sequence[str], obs_horizon: int, action_horizon: int,
                 episodes: Sequence[int] | None = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory} is not a gpc_ros episode dataset (no {META_FILE})")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format must be {FORMAT!r} version {FORMAT_VERSION}; got "
                             f"{self.meta.get('format')!r} version {self.meta.get('format_version')!r}")
        self.keys = tuple(dict.fromkeys([*keys, ACTION_KEY]))
        missing = [k for k in self.keys if k not in self.meta["keys"]]
        if missing:
            raise KeyError(f"{self.directory} has no {missing}; it has {sorted(self.meta['keys'])}")
        self.obs_horizon, self.action_horizon = obs_horizon, action_horizon
        self.episodes = list(range(self.meta["num_episodes"])) if episodes is None else list(episodes)
        if not self.episodes:
            raise ValueError(f"EpisodeDataset over {self.directory} selects no episode")
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        for e in self.episodes:
            with np.load(episode_path(self.directory, e)) as data:
                for k in self.keys:
                    arrays[k].append(data[k])
        self._set_episodes(arrays)

    def _set_episodes(self, arrays: Mapping[str, Sequence[np.ndarray]]) -> None:
        """Concatenate per-episode arrays (same keys, ``(T_e, ...)``) and build the window index."""
        lengths = [len(a) for a in arrays[ACTION_KEY]]
        self.data = {k: np.concatenate(v) for k, v in arrays.items()}
        self.episode_length = np.asarray(lengths, dtype=np.int64)
        self.episode_start = np.concatenate([[0], np.cumsum(self.episode_length)[:-1]]).astype(np.int64)
        # sample i -> (its episode's first row, its episode's last row, its own row)
        self._first = np.repeat(self.episode_start, self.episode_length)
        self._last = self._first + np.repeat(self.episode_length, self.episode_length) - 1
        self._row = np.arange(int(self.episode_length.sum()))

    def __len__(self) -> int:
        return int(self._row.size)

    def batch(self, indices: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Samples ``indices`` -> ``{obs key: (B, T_obs, ...), "action": (B, H, D)}``.

        Plus LeRobot's padding flags ``{key}_is_pad`` (``(B, T_obs)`` / ``(B, H)`` bool).
        """
        idx = np.asarray(indices, dtype=np.int64)
        row, first, last = self._row[idx], self._first[idx], self._last[idx]
        obs_want = row[:, None] + np.arange(1 - self.obs_horizon, 1)[None, :]
        act_want = row[:, None] + np.arange(self.action_horizon)[None, :]
        obs_rows = np.maximum(obs_want, first[:, None])
        act_rows = np.minimum(act_want, last[:, None])
        out = {k: self.data[k][obs_rows] for k in self.keys if k != ACTION_KEY}
        out[ACTION_KEY] = self.data[ACTION_KEY][act_rows].astype(np.float32)
        # LeRobot's padding flags: True where the window reached outside the episode (a repeated frame)
        for k in self.keys:
            out[f"{k}_is_pad"] = act_want > last[:, None] if k == ACTION_KEY else obs_want < first[:, None]
        return out

    def values(self, key: str) -> np.ndarray:
        """Every row of ``key`` in these episodes (e.g. for normalisation stats)."""
        return self.data[key]


def split_episodes(num_episodes: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Train / validation episode indices: the last ``round(val_fraction * N)`` (at least 1 if > 0) validate."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * num_episodes))
    if num_episodes - n_val < 1:
        raise ValueError(f"{num_episodes} episode(s) leave none to train on with val_fraction {val_fraction}")
    return list(range(num_episodes - n_val)), list(range(num_episodes - n_val, num_episodes))
