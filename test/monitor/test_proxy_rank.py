"""Rank correlation and the tests behind "Offline proxy vs success rate" (gpc_ros.monitor.proxy_rank)."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.monitor.proxy_rank import (
    average_ranks,
    bootstrap_spearman,
    fisher_exact_two_sided,
    pairwise_tests,
    spearman,
)


def test_spearman_on_known_values():
    # textbook value (1 - 6 sum d^2 / (n (n^2 - 1)) does not apply with ties; Pearson of average ranks:
    # ranks of y = [1, 2, 3.5, 5, 3.5] -> rho = 0.8207826816681233, as scipy.stats.spearmanr gives)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-12)
    # no ties: 1 - 6 * sum d^2 / (n (n^2 - 1)); d = (0, 0, -1, 1, 0) -> 1 - 12 / 120 = 0.9
    assert spearman([10, 20, 30, 40, 50], [1, 2, 4, 3, 5]) == pytest.approx(0.9, abs=1e-12)
    assert spearman([0.1, 0.2, 0.3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 2, 3], [4, 4, 4]))
    np.testing.assert_array_equal(average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])


def test_fisher_exact_on_known_values():
    # R: fisher.test(matrix(c(8, 1, 2, 5), 2))$p.value = 0.03496503 (scipy.stats.fisher_exact([[8, 2], [1, 5]]))
    assert fisher_exact_two_sided(8, 10, 1, 6) == pytest.approx(0.03496503496503495, rel=1e-9)
    assert fisher_exact_two_sided(3, 10, 3, 10) == pytest.approx(1.0)
    pairs = pairwise_tests({"a": (8, 10), "b": (1, 6), "c": (3, 10)})
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]


def test_bootstrap_is_certain_only_when_the_data_are():
    proxy = np.tile([0.01, 0.02, 0.03], (6, 1))       # every held-out episode ranks the weights alike
    clear = [[True] * 20, [True] * 10 + [False] * 10, [False] * 20]
    boot = bootstrap_spearman(proxy, clear, draws=200)
    assert boot["rho_p2_5"] == pytest.approx(1.0) and boot["fraction_positive"] == 1.0
    rng = np.random.default_rng(0)
    noisy = [list(rng.random(8) < 0.3) for _ in range(3)]  # the same true rate for every arm
    boot = bootstrap_spearman(proxy, noisy, draws=400)
    assert boot["rho_p2_5"] < 0 < boot["rho_p97_5"]
    with pytest.raises(ValueError, match="proxy_by_episode"):
        bootstrap_spearman(proxy, noisy[:2])
