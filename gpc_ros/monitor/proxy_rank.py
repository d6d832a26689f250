"""How well an offline proxy ranks weight vectors compared with measured success rates (docs/monitoring.md).

Pure numpy: Spearman's rank correlation (average ranks for ties), a bootstrap of it over benchmark episodes and
held-out episodes, and Fisher's exact test for each pair of arms (which differences the success rates can show).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` (ascending), ties sharing their average rank."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks; nan when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / denom) if denom > 0 else float("nan")


def fisher_exact_two_sided(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test for ``s1/n1`` vs ``s2/n2`` (sum of tables no more likely)."""
    total, succ = n1 + n2, s1 + s2

    def prob(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, succ - a) / math.comb(total, succ)

    lo, hi = max(0, succ - n2), min(n1, succ)
    observed = prob(s1)
    return float(min(1.0, sum(p for a in range(lo, hi + 1) if (p := prob(a)) <= observed * (1 + 1e-9))))


def bootstrap_spearman(proxy_by_episode: np.ndarray, outcomes: Sequence[Sequence[bool]], draws: int = 2000,
                       seed: int = 0) -> dict[str, float]:
    """Spearman(-proxy, success rate) under resampling.

    ``proxy_by_episode`` is ``(E, W)``: the proxy (lower = better) of each held-out episode for each of the ``W``
    weight vectors; ``outcomes[w]`` the benchmark episodes' successes of weight vector ``w``. Each draw resamples
    the held-out episodes and, independently per arm, the benchmark episodes (with replacement). Returns the
    rho quantiles (2.5, 50, 97.5 %), the fraction of draws with rho > 0 and with rho undefined (a constant side).
    """
    rng = np.random.default_rng(seed)
    proxy = np.asarray(proxy_by_episode, dtype=np.float64)
    if proxy.ndim != 2 or proxy.shape[1] != len(outcomes):
        raise ValueError(f"proxy_by_episode must be (episodes, {len(outcomes)}), got {proxy.shape}")
    arms = [np.asarray(o, dtype=np.float64) for o in outcomes]
    rhos = []
    for _ in range(draws):
        p = np.nanmean(proxy[rng.integers(0, len(proxy), len(proxy))], axis=0)
        rates = [a[rng.integers(0, len(a), len(a))].mean() for a in arms]
        rhos.append(spearman(-p, rates))
    r = np.asarray(rhos)
    ok = r[np.isfinite(r)]
    q = np.percentile(ok, [2.5, 50, 97.5]) if len(ok) else [float("nan")] * 3
    return {"rho_p2_5": float(q[0]), "rho_median": float(q[1]), "rho_p97_5": float(q[2]),
            "fraction_positive": float(np.mean(ok > 0)) if len(ok) else float("nan"),
            "fraction_undefined": float(1 - len(ok) / len(r)), "draws": draws}


def pairwise_tests(rates: Mapping[str, tuple[int, int]]) -> list[dict]:
    """Fisher's exact p for every pair of arms ``{label: (successes, episodes)}``."""
    labels = list(rates)
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            (sa, na), (sb, nb) = rates[a], rates[b]
            out.append({"a": a, "b": b, "rate_a": sa / na, "rate_b": sb / nb,
                        "fisher_p": fisher_exact_two_sided(sa, na, sb, nb)})
    return out
