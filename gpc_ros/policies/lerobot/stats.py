"""Dataset statistics exactly as LeRobot computes them (``lerobot.datasets.compute_stats``, v0.4.4), in numpy.

Per episode and feature: ``min``, ``max``, ``mean``, ``std``, ``count`` and the quantiles ``q01 q10 q50 q90 q99``
estimated from a 5000-bin histogram (LeRobot's ``RunningQuantileStats``). Images and videos: per channel, over a
subsample of the episode's frames (``sample_indices``), frames of 300 px or more strided down to ~150 px, values
in [0, 1], shape ``(3, 1, 1)``. The dataset's ``meta/stats.json`` aggregates the episodes: count-weighted mean and
variance, min of mins, max of maxes, count-weighted quantiles. Ported (not imported: lerobot cannot be installed
beside this project's torch) and checked against lerobot's own numbers in ``test/policies/test_lerobot_compat.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in DEFAULT_QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)


class RunningQuantileStats:
    """Mean, std, min, max and histogram quantiles of ``(N, D)`` batches (LeRobot's algorithm, same numbers)."""

    def __init__(self, quantile_list: Sequence[float] = DEFAULT_QUANTILES, num_quantile_bins: int = 5000) -> None:
        self._count = 0
        self._mean = self._mean_of_squares = self._min = self._max = None
        self._histograms: list[np.ndarray] = []
        self._bin_edges: list[np.ndarray] = []
        self._num_quantile_bins = num_quantile_bins
        self._quantile_list = list(quantile_list)
        self._quantile_keys = [f"q{int(q * 100):02d}" for q in self._quantile_list]

    def update(self, batch: np.ndarray) -> None:
        """Add a batch of vectors (every axis but the last is a batch axis)."""
        batch = batch.reshape(-1, batch.shape[-1])
        num_elements, vector_length = batch.shape
        if self._count == 0:
            self._mean = np.mean(batch, axis=0)
            self._mean_of_squares = np.mean(batch**2, axis=0)
            self._min = np.min(batch, axis=0)
            self._max = np.max(batch, axis=0)
            self._histograms = [np.zeros(self._num_quantile_bins) for _ in range(vector_length)]
            self._bin_edges = [np.linspace(self._min[i] - 1e-10, self._max[i] + 1e-10, self._num_quantile_bins + 1)
                               for i in range(vector_length)]
        else:
            if vector_length != self._mean.size:
                raise ValueError("The length of new vectors does not match the initialized vector length.")
            new_max, new_min = np.max(batch, axis=0), np.min(batch, axis=0)
            changed = np.any(new_max > self._max) or np.any(new_min < self._min)
            self._max = np.maximum(self._max, new_max)
            self._min = np.minimum(self._min, new_min)
            if changed:
                self._adjust_histograms()
        self._count += num_elements
        self._mean += (np.mean(batch, axis=0) - self._mean) * (num_elements / self._count)
        self._mean_of_squares += (np.mean(batch**2, axis=0) - self._mean_of_squares) * (num_elements / self._count)
        for i in range(batch.shape[1]):
            hist, _ = np.histogram(batch[:, i], bins=self._bin_edges[i])
            self._histograms[i] += hist

    def get_statistics(self) -> dict[str, np.ndarray]:
        """min, max, mean, std, count and the quantiles of everything seen so far."""
        if self._count < 2:
            raise ValueError("Cannot compute statistics for less than 2 vectors.")
        stats = {"min": self._min.copy(), "max": self._max.copy(), "mean": self._mean.copy(),
                 "std": np.sqrt(np.maximum(0, self._mean_of_squares - self._mean**2)),
                 "count": np.array([self._count])}
        for key, q in zip(self._quantile_keys, self._quantile_list, strict=True):
            stats[key] = np.array([_quantile(h, e, q * self._count)
                                   for h, e in zip(self._histograms, self._bin_edges, strict=True)])
        return stats

    def _adjust_histograms(self) -> None:
        for i in range(len(self._histograms)):
            old_edges, old_hist = self._bin_edges[i], self._histograms[i]
            padding = (self._max[i] - self._min[i]) * 1e-10
            new_edges = np.linspace(self._min[i] - padding, self._max[i] + padding, self._num_quantile_bins + 1)
            old_centers = (old_edges[:-1] + old_edges[1:]) / 2
            new_hist = np.zeros(self._num_quantile_bins)
            for center, count in zip(old_centers, old_hist, strict=False):
                if count > 0:
                    idx = max(0, min(np.searchsorted(new_edges, center) - 1, self._num_quantile_bins - 1))
                    new_hist[idx] += count
            self._histograms[i], self._bin_edges[i] = new_hist, new_edges


def _quantile(hist: np.ndarray, edges: np.ndarray, target_count: float) -> float:
    cumsum = np.cumsum(hist)
    idx = np.searchsorted(cumsum, target_count)
    if idx == 0:
        return edges[0]
    if idx >= len(cumsum):
        return edges[-1]
    count_before = cumsum[idx - 1]
    count_in_bin = cumsum[idx] - count_before
    if count_in_bin == 0:
        return edges[idx]
    return edges[idx] + (target_count - count_before) / count_in_bin * (edges[idx + 1] - edges[idx])


def _basic_stats(array: np.ndarray, sample_count: int) -> dict[str, np.ndarray]:
    stats = {"min": np.min(array, axis=0), "max": np.max(array, axis=0), "mean": np.mean(array, axis=0),
             "std": np.std(array, axis=0), "count": np.array([sample_count])}
    for key in QUANTILE_KEYS:
        stats[key] = stats["mean"].copy()
    return stats


def vector_stats(data: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one episode's ``(T,)`` or ``(T, ...)`` numeric feature (LeRobot: axis 0, keepdims for 1-D)."""
    data = np.asarray(data)
    reshaped = data.reshape(-1, 1) if data.ndim == 1 else data
    if reshaped.shape[0] < 2:
        stats = _basic_stats(reshaped, data.shape[0])
    else:
        running = RunningQuantileStats()
        running.update(reshaped)
        stats = running.get_statistics()
        stats["count"] = np.array([data.shape[0]])
    if data.ndim == 1:
        stats = {k: v if k == "count" else v.reshape(1) for k, v in stats.items()}
    return stats


def sample_indices(data_len: int) -> list[int]:
    """Which frames of an episode LeRobot's image stats look at."""
    min_samples, max_samples, power = 100, 10_000, 0.75
    min_samples = min(min_samples, data_len)
    num = max(min_samples, min(int(data_len**power), max_samples))
    return np.round(np.linspace(0, data_len - 1, num)).astype(int).tolist()


def _downsample(img: np.ndarray, target_size: int = 150, max_size_threshold: int = 300) -> np.ndarray:
    _, height, width = img.shape
    if max(width, height) < max_size_threshold:
        return img
    factor = int(width / target_size) if width > height else int(height / target_size)
    return img[:, ::factor, ::factor]


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of one episode's frames ``(T, H, W, C)`` uint8, as LeRobot: shape ``(C, 1, 1)``, [0, 1]."""
    chosen = np.stack([_downsample(np.ascontiguousarray(frames[i].transpose(2, 0, 1)))
                       for i in sample_indices(len(frames))])
    b, c = chosen.shape[:2]
    reshaped = chosen.transpose(0, 2, 3, 1).reshape(-1, c)
    if reshaped.shape[0] < 2:
        stats = _basic_stats(reshaped, b)
    else:
        running = RunningQuantileStats()
        running.update(reshaped)
        stats = running.get_statistics()
        stats["count"] = np.array([b])
    return {k: v if k == "count" else (v.reshape(1, -1, 1, 1) / 255.0)[0] for k, v in stats.items()}


def aggregate_feature_stats(stats_list: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episodes' stats of one feature -> the dataset's (count-weighted, as LeRobot's ``aggregate_feature_stats``)."""
    means = np.stack([s["mean"] for s in stats_list])
    variances = np.stack([s["std"] ** 2 for s in stats_list])
    counts = np.stack([s["count"] for s in stats_list])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out = {"min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
           "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
           "mean": mean, "std": np.sqrt(variance), "count": total}
    for key in [k for k in stats_list[0] if k.startswith("q") and k[1:].isdigit()]:
        if all(key in s for s in stats_list):
            out[key] = (np.stack([s[key] for s in stats_list]) * counts).sum(axis=0) / total
    return out


def aggregate_stats(stats_list: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Aggregate per-episode ``{feature: stats}`` dicts (the union of their features)."""
    keys = sorted({k for s in stats_list for k in s})
    return {k: aggregate_feature_stats([s[k] for s in stats_list if k in s]) for k in keys}


def to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """``{feature: {stat: nested list}}`` for ``meta/stats.json``."""
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
