"""Latency per chunk: each parent alone and the pair composed (K = 2), measured side by side in one process.

One observation window from a dataset (episode 0, its first frames) is encoded and sampled ``repeats`` times per
configuration, the configurations interleaved round-robin so that machine load hits them alike; the report gives
medians (ms) and the ratios composed / parent alone and composed / (sum of the parents alone), which are what
transfers between machines.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from gpc_ros.benchmark.episode import build_composer, step_generator
from gpc_ros.benchmark.plan import Arm
from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.dataset import EpisodeDataset


def measure(policies: Mapping[str, ChunkPolicy], pair: tuple[str, str], dataset: Path, repeats: int = 30,
            sampler_steps: int = 10, threads: int = 1) -> dict:
    """Median ms per chunk (encode + sample) of ``A``, ``B`` and ``A+B`` at w = (0.5, 0.5), and their ratios."""
    for name in pair:
        if name not in policies:
            raise ValueError(f"--pair names unknown parent {name!r}; the parents are {list(policies)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    torch.set_num_threads(threads)
    a, b = pair
    arms = {a: Arm((a,)), b: Arm((b,)), f"{a}+{b}": Arm((a, b), (0.5, 0.5))}
    composers = {k: build_composer(arm, policies, sampler_steps) for k, arm in arms.items()}
    windows = {}
    for name in pair:
        p = policies[name]
        ds = EpisodeDataset(dataset, p.expected_keys, p.config.observation.obs_horizon, p.config.action_horizon,
                            episodes=[0])
        windows[name] = {k: v for k, v in ds.batch([1]).items() if k != "action"}
    times: dict[str, list[float]] = {k: [] for k in arms}
    with torch.no_grad():
        for r in range(repeats + 1):  # the first round warms up and is dropped
            for key, arm in arms.items():
                composer = composers[key]
                t0 = time.perf_counter()
                enc = composer.encode([windows[n] for n in arm.parents])
                composer.compose(enc, list(arm.weights), generator=step_generator(0, r))
                if r:
                    times[key].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    both = f"{a}+{b}"
    return {"ms_per_chunk_median": {k: round(v, 2) for k, v in med.items()},
            "ratio_composed_to": {a: round(med[both] / med[a], 3), b: round(med[both] / med[b], 3),
                                  "sum_of_both": round(med[both] / (med[a] + med[b]), 3)},
            "repeats": repeats, "sampler_steps": sampler_steps, "torch_threads": threads,
            "samplers": {k: composers[k].config.sampler.kind for k in arms}}
