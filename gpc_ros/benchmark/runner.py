"""The benchmark loops: the fixed-seed arms (resumable, sharded) and the online weight search (resumable).

Both take an ``episode(arm, seed) -> dict`` callable (the fields of a results row, at least ``success``); the real
one is :meth:`gpc_ros.benchmark.episode.SimBackend.run`. It is started lazily by ``open_episode`` only when there is
an episode left to run, so a finished benchmark re-run costs nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np

from gpc_ros.benchmark.plan import Arm, convex_arms, jobs
from gpc_ros.benchmark.results import ResultsMismatchError, append_row, done_keys, episodes_file, read_rows
from gpc_ros.compose.search import SearchConfig, WeightSearch, paper_grid

logger = logging.getLogger(__name__)

Episode = Callable[[Arm, int], dict]
OpenEpisode = Callable[[], contextlib.AbstractContextManager]


def _row(arm: Arm, seed: int, fields: dict, **extra) -> dict:
    if "success" not in fields:
        raise ValueError(f"an episode must report 'success'; got {sorted(fields)}")
    return {"arm": arm.id, "seed": int(seed), "operator": arm.operator, "parents": list(arm.parents),
            "weights": list(arm.weights), "host": socket.gethostname(),
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **extra, **fields}


def run_arms(directory: Path, arms: Sequence[Arm], seeds: Sequence[int], open_episode: OpenEpisode,
             shard: tuple[int, int] = (0, 1), max_episodes: int | None = None, progress: bool = True) -> int:
    """Run this shard's ``(arm, seed)`` episodes not yet in ``directory``; returns how many were run now.

    ``open_episode()`` returns a context manager yielding the ``episode(arm, seed)`` callable.
    ``max_episodes`` stops after that many new episodes (a time budget); the rest runs on the next call.
    """
    from tqdm import tqdm

    mine = jobs(arms, seeds, shard)
    done = done_keys(directory)
    todo = [(a, s) for a, s in mine if (a.id, s) not in done]
    if max_episodes is not None:
        todo = todo[:max_episodes]
    if not todo:
        return 0
    path = episodes_file(directory, shard)
    with open_episode() as episode, tqdm(total=len(mine), initial=len(mine) - len(
            [1 for a, s in mine if (a.id, s) not in done]), unit="ep", desc=f"benchmark shard {shard[0]}/{shard[1]}",
            disable=not progress) as bar:
        for arm, seed in todo:
            fields = episode(arm, seed)
            append_row(path, _row(arm, seed, fields, shard=f"{shard[0]}/{shard[1]}"))
            bar.update(1)
            bar.set_postfix(arm=arm.id, success=int(bool(fields["success"])))
    return len(todo)


def bandit_file(directory: Path, pair: tuple[str, str]) -> Path:
    """The bandit file of ``pair`` in ``directory``."""
    return Path(directory) / f"bandit.{pair[0]}+{pair[1]}.jsonl"


def bandit_arms(pair: tuple[str, str]) -> list[Arm]:
    """The search's arms: the paper's grid for the pair (arm ``i`` has ``w_A = i / 10``)."""
    return convex_arms(pair[0], pair[1], paper_grid()[:, 0])


def replay_search(rows: Sequence[dict], pair: tuple[str, str], search_seed: int) -> WeightSearch:
    """The Thompson search state after ``rows``, its random draws replayed.

    A resumed search therefore continues exactly as an uninterrupted one; raises :class:`ResultsMismatchError` if the
    rows were not produced by this search.
    """
    search = WeightSearch(paper_grid(), list(pair), SearchConfig("thompson", seed=search_seed))
    for n, row in enumerate(rows):
        index, _ = search.next_arm()
        if index != int(row["arm_index"]) or int(row["episode"]) != n:
            raise ResultsMismatchError(f"bandit row {n} (arm {row['arm_index']}, episode {row['episode']}) is not what "
                                       f"a Thompson search with seed {search_seed} picks (arm {index}); wrong "
                                       f"--search-seed or a damaged file")
        search.record(index, bool(row["success"]))
    return search


def run_bandit(directory: Path, pair: tuple[str, str], seeds: Sequence[int], episodes: int,
               open_episode: OpenEpisode, search_seed: int = 0, progress: bool = True) -> WeightSearch:
    """Thompson sampling over the pair's 11 grid arms for ``episodes`` episodes in all.

    Episode ``n`` uses layout ``seeds[n]``; resumed from ``bandit.<pair>.jsonl``.
    """
    from tqdm import tqdm

    if len(seeds) < episodes:
        raise ValueError(f"the bandit needs one seed per episode: {episodes} episodes, {len(seeds)} seeds")
    path = bandit_file(directory, pair)
    rows = read_rows(path)
    search = replay_search(rows, pair, search_seed)
    arms = bandit_arms(pair)
    if len(rows) >= episodes:
        return search
    with open_episode() as episode, tqdm(total=episodes, initial=len(rows), unit="ep", disable=not progress,
                                         desc=f"bandit {pair[0]}+{pair[1]}") as bar:
        for n in range(len(rows), episodes):
            index, _ = search.next_arm()
            fields = episode(arms[index], seeds[n])
            append_row(path, _row(arms[index], seeds[n], fields, episode=n, arm_index=index,
                                  search_seed=search_seed))
            search.record(index, bool(fields["success"]))
            bar.update(1)
    return search


def episodes_to_best(rows: Sequence[dict], pair: tuple[str, str], best_index: int | Collection[int],
                     search_seed: int = 0) -> int | None:
    """After how many bandit episodes the search's best arm became ``best_index`` for good.

    Best = highest posterior mean; "for good" = until the last recorded episode. None if it is not the best at the
    end. ``best_index`` may be several indices (grid arms tied for best, :func:`grid_best_ties`): any of them counts.
    """
    targets = {best_index} if isinstance(best_index, int) else set(best_index)
    search = WeightSearch(paper_grid(), list(pair), SearchConfig("thompson", seed=search_seed))
    settled: int | None = None
    for n, row in enumerate(rows, start=1):
        search.record(int(row["arm_index"]), bool(row["success"]))
        if search.best().index in targets:
            settled = n if settled is None else settled
        else:
            settled = None
    return settled


def grid_arm_ids(results, pair: tuple[str, str], parents_as_endpoints: bool = False) -> dict[str, int]:
    """The measured arms that stand for the pair's grid: ``{arm id: index}`` (``w_A = index / 10``).

    ``parents_as_endpoints``: a parent alone (arm ``A`` / ``B``) stands for the endpoint ``w_A = 1`` / ``0`` when
    that endpoint itself was not measured. Only valid where the parent's own sampler is the pair's (then the chunks
    are equal bit for bit: test_shipped_parents.py); a flow parent next to a diffusion one is not.
    """
    grid = bandit_arms(pair)
    measured = {r.arm for r in results if r.episodes}
    ids = {a.id: i for i, a in enumerate(grid) if a.id in measured}
    if parents_as_endpoints:
        for name, index in ((pair[0], len(grid) - 1), (pair[1], 0)):
            if grid[index].id not in ids and name in measured:
                ids[name] = index
    return ids


def grid_best(results, pair: tuple[str, str], parents_as_endpoints: bool = False) -> int | None:
    """Index (``w_A = i / 10``) of the pair's measured grid arm with the highest success rate.

    Ties: the lower bound of the Wilson interval, then more episodes. None if no grid arm was measured.
    ``parents_as_endpoints``: see :func:`grid_arm_ids`.
    """
    ids = grid_arm_ids(results, pair, parents_as_endpoints)
    measured = [r for r in results if r.arm in ids and r.episodes]
    if not measured:
        return None
    best = max(measured, key=lambda r: (r.rate, r.wilson_low, r.episodes))
    return ids[best.arm]


def grid_best_ties(results, pair: tuple[str, str], parents_as_endpoints: bool = False) -> list[int]:
    """Indices of the measured grid arms tied for best, :func:`grid_best`'s arm first.

    Tied: the same successes out of the same episodes. Empty if no grid arm was measured.
    """
    best = grid_best(results, pair, parents_as_endpoints)
    if best is None:
        return []
    ids = grid_arm_ids(results, pair, parents_as_endpoints)
    by_index = {i: r for r in results if r.episodes and (i := ids.get(r.arm)) is not None}
    top = by_index[best]
    return [best] + sorted(i for i, r in by_index.items()
                           if i != best and (r.successes, r.episodes) == (top.successes, top.episodes))


def arm_weights(rows: Sequence[dict]) -> np.ndarray:
    """``(n, K)`` weights of ``rows``."""
    return np.asarray([r["weights"] for r in rows], dtype=np.float64)
