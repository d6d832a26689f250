"""Test-time weight search: which weight vector (arm) makes the composed policy succeed most often.

Arms come from a grid: the paper's ``w1 = 0, 0.1, ..., 1`` for K = 2 (:func:`paper_grid`), an even simplex grid
for K > 2 (:func:`simplex_grid`), or a restricted part of one (:func:`restricted_grid`). One episode is run with
the weights :meth:`WeightSearch.next_arm` picks, and its success recorded with :meth:`WeightSearch.record`:

* ``grid``: round robin, the least-tried arm next (the paper's exhaustive evaluation, ``episodes_per_arm`` each).
* ``thompson``: Thompson sampling with a ``Beta(prior_alpha + successes, prior_beta + failures)`` posterior per
  arm: draw one success rate per arm, run the arm with the largest draw.

:meth:`WeightSearch.summary` reports per arm the success rate with its Wilson score interval, the posterior mean
and the posterior probability of being the best arm. The state (counts and the random generator) is saved to a
JSON file written atomically (temporary file + ``os.replace``) and resumed with :meth:`WeightSearch.load`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

STRATEGIES = ("grid", "thompson")
STATE_VERSION = 1


def simplex_grid(k: int, divisions: int) -> np.ndarray:
    """All ``(A, k)`` weight vectors with entries ``j / divisions`` summing to 1 (first weight descending)."""
    if k < 1 or divisions < 1:
        raise ValueError(f"simplex_grid needs k >= 1 and divisions >= 1; got k={k}, divisions={divisions}")
    rows = [c for c in itertools.product(range(divisions, -1, -1), repeat=k) if sum(c) == divisions]
    return np.asarray(rows, dtype=np.float64) / divisions


def paper_grid() -> np.ndarray:
    """The GPC paper's K = 2 grid: ``w1 = 0, 0.1, ..., 1``, ``w2 = 1 - w1`` (11 arms, ``w1`` ascending)."""
    w1 = np.round(np.linspace(0.0, 1.0, 11), 10)
    return np.stack([w1, 1.0 - w1], axis=1)


def restricted_grid(grid: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Rows of ``grid`` with ``low[i] <= w_i <= high[i]`` for every parent ``i``."""
    grid = np.asarray(grid, dtype=np.float64)
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if lo.shape != (grid.shape[1],) or hi.shape != (grid.shape[1],):
        raise ValueError(f"low/high need one bound per parent ({grid.shape[1]}); got {lo.shape}, {hi.shape}")
    keep = np.all((grid >= lo - 1e-12) & (grid <= hi + 1e-12), axis=1)
    if not keep.any():
        raise ValueError(f"no grid weight lies within low={lo.tolist()} and high={hi.tolist()}")
    return grid[keep]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (``(0, 1)`` with no trials); ``z = 1.96`` is 95 %."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class SearchConfig:
    """How arms are chosen."""

    strategy: Literal["grid", "thompson"] = "thompson"
    prior_alpha: float = 1.0
    """Beta prior pseudo-successes."""
    prior_beta: float = 1.0
    """Beta prior pseudo-failures."""
    seed: int = 0
    """Seed of the arm-choosing random generator."""
    posterior_samples: int = 4000
    """Monte Carlo draws for the probability of being best."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"SearchConfig.strategy must be one of {STRATEGIES}; got {self.strategy!r}")
        for name in ("prior_alpha", "prior_beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SearchConfig.{name} must be > 0; got {getattr(self, name)}")
        if self.posterior_samples < 1:
            raise ValueError(f"SearchConfig.posterior_samples must be >= 1; got {self.posterior_samples}")


@dataclass(frozen=True)
class ArmSummary:
    """What is known about one arm."""

    index: int
    weights: tuple[float, ...]
    successes: int
    trials: int
    success_rate: float
    wilson_low: float
    wilson_high: float
    posterior_mean: float
    probability_best: float


class WeightSearch:
    """Grid or Thompson-sampling search over weight arms, resumable from a JSON file."""

    def __init__(self, arms: np.ndarray | Sequence[Sequence[float]], parent_names: Sequence[str],
                 config: SearchConfig | None = None) -> None:
        self.arms = np.asarray(arms, dtype=np.float64)
        self.parent_names = list(parent_names)
        self.config = config or SearchConfig()
        if self.arms.ndim != 2 or self.arms.shape[0] < 1 or self.arms.shape[1] != len(self.parent_names):
            raise ValueError(f"arms must be (A >= 1, K={len(self.parent_names)}) for parents {self.parent_names}; "
                             f"got shape {self.arms.shape}")
        self.successes = np.zeros(len(self.arms), dtype=np.int64)
        self.trials = np.zeros(len(self.arms), dtype=np.int64)
        self.rng = np.random.default_rng(self.config.seed)

    # ------------------------------------------------------------------ episodes
    def next_arm(self) -> tuple[int, np.ndarray]:
        """The arm to run next and its ``(K,)`` weights."""
        if self.config.strategy == "grid":
            index = int(np.argmin(self.trials))
        else:
            alpha, beta = self._posterior()
            index = int(np.argmax(self.rng.beta(alpha, beta)))
        return index, self.arms[index].copy()

    def record(self, arm: int, success: bool) -> None:
        """Record one episode's outcome for ``arm``."""
        if not 0 <= arm < len(self.arms):
            raise ValueError(f"arm must be in [0, {len(self.arms)}); got {arm}")
        self.trials[arm] += 1
        self.successes[arm] += int(bool(success))
        logger.debug("arm %d %s: %d/%d", arm, self.arms[arm].tolist(), self.successes[arm], self.trials[arm])

    # ------------------------------------------------------------------ reporting
    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.config.prior_alpha + self.successes,
                self.config.prior_beta + (self.trials - self.successes))

    def probability_best(self) -> np.ndarray:
        """``(A,)`` posterior probability that each arm has the highest success rate (Monte Carlo, own seed)."""
        alpha, beta = self._posterior()
        draws = np.random.default_rng(self.config.seed + 1).beta(
            alpha, beta, size=(self.config.posterior_samples, len(self.arms)))
        return np.bincount(np.argmax(draws, axis=1), minlength=len(self.arms)) / self.config.posterior_samples

    def summary(self) -> list[ArmSummary]:
        """One :class:`ArmSummary` per arm, in arm order."""
        alpha, beta = self._posterior()
        p_best = self.probability_best()
        out = []
        for i, w in enumerate(self.arms):
            s, n = int(self.successes[i]), int(self.trials[i])
            low, high = wilson_interval(s, n)
            out.append(ArmSummary(i, tuple(float(v) for v in w), s, n, s / n if n else float("nan"), low, high,
                                  float(alpha[i] / (alpha[i] + beta[i])), float(p_best[i])))
        return out

    def best(self) -> ArmSummary:
        """The arm with the highest posterior mean success rate (ties: most trials, then lowest index)."""
        rows = self.summary()
        return max(rows, key=lambda r: (r.posterior_mean, r.trials, -r.index))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return {
            "version": STATE_VERSION,
            "parent_names": self.parent_names,
            "config": asdict(self.config),
            "arms": self.arms.tolist(),
            "successes": self.successes.tolist(),
            "trials": self.trials.tolist(),
            "rng_state": self.rng.bit_generator.state,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the state to ``path`` atomically (a crash leaves the previous file intact)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WeightSearch":
        """Resume a search saved with :meth:`save`."""
        data = json.loads(Path(path).read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: search state version must be {STATE_VERSION}; got {data.get('version')!r}")
        search = cls(data["arms"], data["parent_names"], SearchConfig(**data["config"]))
        search.successes = np.asarray(data["successes"], dtype=np.int64)
        search.trials = np.asarray(data["trials"], dtype=np.int64)
        if search.successes.shape != (len(search.arms),) or search.trials.shape != (len(search.arms),) \
                or np.any(search.successes > search.trials) or np.any(search.successes < 0):
            raise ValueError(f"{path}: successes/trials do not fit the {len(search.arms)} arms")
        search.rng.bit_generator.state = data["rng_state"]
        return search

    @classmethod
    def load_or_create(cls, path: str | os.PathLike, arms: np.ndarray, parent_names: Sequence[str],
                       config: SearchConfig | None = None) -> "WeightSearch":
        """Resume from ``path`` if it exists (its arms and parents must match), else start fresh."""
        if not Path(path).exists():
            return cls(arms, parent_names, config)
        search = cls.load(path)
        if search.parent_names != list(parent_names) or not np.allclose(search.arms, np.asarray(arms)):
            raise ValueError(f"{path} holds a search over parents {search.parent_names} with "
                             f"{len(search.arms)} arms, not this one; move it away or pass another path")
        return search
