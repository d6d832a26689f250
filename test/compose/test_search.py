"""Weight search on a synthetic success table: grid and Thompson sampling find the best arm; state survives
restarts; Wilson intervals are the textbook ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpc_ros.compose.search import (
    SearchConfig,
    WeightSearch,
    paper_grid,
    restricted_grid,
    simplex_grid,
    wilson_interval,
)

# True success probability per arm of the paper grid (w1 = 0 .. 1): best at w1 = 0.6, runner-up 0.12 below.
TRUE_P = np.array([0.20, 0.25, 0.30, 0.40, 0.50, 0.58, 0.70, 0.55, 0.45, 0.35, 0.30])
BEST = 6


def run_episodes(search: WeightSearch, episodes: int, rng: np.random.Generator) -> list[int]:
    chosen = []
    for _ in range(episodes):
        arm, weights = search.next_arm()
        assert weights.tolist() == search.arms[arm].tolist()
        search.record(arm, bool(rng.random() < TRUE_P[arm]))
        chosen.append(arm)
    return chosen


def test_grids() -> None:
    assert paper_grid()[:, 0].tolist() == pytest.approx([i / 10 for i in range(11)])
    np.testing.assert_allclose(paper_grid().sum(axis=1), 1.0)
    grid = simplex_grid(3, 4)
    assert grid.shape == (15, 3)  # C(4 + 2, 2)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert len({tuple(r) for r in grid.tolist()}) == 15 and (grid >= 0).all()
    restricted = restricted_grid(paper_grid(), [0.3, 0.0], [0.7, 1.0])
    assert restricted[:, 0].tolist() == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="no grid weight lies within"):
        restricted_grid(paper_grid(), [0.55, 0.0], [0.58, 1.0])


def test_wilson_interval_textbook_values() -> None:
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_grid_search_evaluates_every_arm_equally_and_finds_the_best() -> None:
    search = WeightSearch(paper_grid(), ["rgb", "pcd"], SearchConfig(strategy="grid"))
    run_episodes(search, 11 * 80, np.random.default_rng(0))
    assert search.trials.tolist() == [80] * 11
    best = search.best()
    assert best.index == BEST and best.weights == pytest.approx((0.6, 0.4))
    assert best.wilson_low < TRUE_P[BEST] < best.wilson_high


def test_thompson_bandit_concentrates_on_the_best_arm() -> None:
    search = WeightSearch(paper_grid(), ["rgb", "pcd"], SearchConfig(strategy="thompson", seed=1))
    chosen = run_episodes(search, 1500, np.random.default_rng(1))
    assert search.best().index == BEST
    late = np.bincount(chosen[-500:], minlength=11)
    assert late[BEST] / 500 > 0.6
    assert search.trials[BEST] > 3 * np.sort(search.trials)[-2] / 2  # more than any other arm, by far
    summary = search.summary()
    assert summary[BEST].probability_best > 0.8
    assert sum(r.probability_best for r in summary) == pytest.approx(1.0)
    assert summary[0].trials < 60  # the worst arm is rarely tried


def test_save_and_resume_continue_the_same_search(tmp_path) -> None:
    path = tmp_path / "search" / "state.json"
    search = WeightSearch(paper_grid(), ["rgb", "pcd"], SearchConfig(seed=3))
    run_episodes(search, 200, np.random.default_rng(2))
    search.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left behind
    resumed = WeightSearch.load(path)
    assert resumed.successes.tolist() == search.successes.tolist()
    assert resumed.trials.tolist() == search.trials.tolist()
    outcomes_a, outcomes_b = np.random.default_rng(9), np.random.default_rng(9)
    assert run_episodes(search, 100, outcomes_a) == run_episodes(resumed, 100, outcomes_b)
    again = WeightSearch.load_or_create(path, paper_grid(), ["rgb", "pcd"])
    assert int(again.trials.sum()) == 200
    with pytest.raises(ValueError, match="holds a search over parents \\['rgb', 'pcd'\\] with 11 arms"):
        WeightSearch.load_or_create(path, simplex_grid(3, 2), ["rgb", "pcd", "depth"])
    fresh = WeightSearch.load_or_create(tmp_path / "none.json", paper_grid(), ["rgb", "pcd"])
    assert int(fresh.trials.sum()) == 0


def test_corrupt_state_is_refused(tmp_path) -> None:
    path = tmp_path / "state.json"
    WeightSearch(paper_grid(), ["rgb", "pcd"]).save(path)
    data = json.loads(path.read_text())
    data["successes"][0] = 5  # more successes than trials
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="successes/trials do not fit"):
        WeightSearch.load(path)


def test_bad_search_arguments() -> None:
    with pytest.raises(ValueError, match=r"arms must be \(A >= 1, K=2\)"):
        WeightSearch(simplex_grid(3, 2), ["rgb", "pcd"])
    with pytest.raises(ValueError, match=r"SearchConfig.strategy must be one of \('grid', 'thompson'\); got 'ucb'"):
        SearchConfig(strategy="ucb")
    with pytest.raises(ValueError, match=r"arm must be in \[0, 11\); got 11"):
        WeightSearch(paper_grid(), ["rgb", "pcd"]).record(11, True)
