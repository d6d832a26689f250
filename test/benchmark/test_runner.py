"""The benchmark runner's bookkeeping: arms, shards, atomic rows, resume after a kill, merging, the bandit, Wilson.

These tests drive the runner with a stand-in episode function whose outcome is a fixed function of (arm, seed):
what is tested here is the bookkeeping (which episodes run, what is stored, how shards and resumed runs add up),
and a simulated episode is not bit-for-bit repeatable between two runs (franky streams on its own thread against
the simulator's clock), so only a deterministic episode can show that two shards give *the same table* as one run.
The real path (sim cameras -> perception -> Composer -> FrankaExecutor -> franky-sim) is tested in
test_benchmark_sim.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from gpc_ros.benchmark.plan import Arm, jobs, parse_arms, parse_seeds, parse_shard
from gpc_ros.benchmark.results import (
    ResultsMismatchError,
    append_row,
    episode_rows,
    mcnemar_exact_p,
    open_results,
    paired,
    read_rows,
    table,
)
from gpc_ros.benchmark.runner import episodes_to_best, replay_search, run_arms, run_bandit
from gpc_ros.compose.search import wilson_interval
from gpc_ros.testing.spin import wait_until

IDENTITY = {"format": "test", "parents": {"a": 1, "b": 2}}


def fake_success(arm: Arm, seed: int) -> bool:
    """A fixed, arm-dependent outcome (about w_a of the seeds succeed for convex arms)."""
    u = zlib.crc32(f"{seed}".encode()) % 1000 / 1000
    return u < (arm.weights[0] if not arm.alone else 0.3)


@contextlib.contextmanager
def fake_backend(log: list | None = None):
    def episode(arm: Arm, seed: int) -> dict:
        if log is not None:
            log.append((arm.id, seed))
        return {"success": fake_success(arm, seed), "wall_s": 0.01, "chunks": 2, "chunk_ms_total": 3.0}
    yield episode


# --------------------------------------------------------------------------- Wilson interval
# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857-872, Table I,
# method 3 (Wilson score interval without continuity correction), and textbook n = 10 / 100 values.
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)), ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718)), ((0, 10), (0.0, 0.2775)), ((5, 10), (0.2366, 0.7634)),
            ((10, 10), (0.7225, 1.0)), ((50, 100), (0.4038, 0.5962))]


@pytest.mark.parametrize("counts,expected", NEWCOMBE)
def test_wilson_interval_matches_published_values(counts, expected) -> None:
    low, high = wilson_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_table_reports_wilson_intervals_per_arm() -> None:
    rows = [{"arm": "a", "seed": i, "success": i < 5} for i in range(10)]
    (result,) = table(rows)
    assert (result.episodes, result.successes, round(result.wilson_low, 4)) == (10, 5, 0.2366)


# Exact (conditional) McNemar p: Fagerland, Lydersen, Laake (2013), BMC Med. Res. Methodol. 13:91, the airway
# hyper-responsiveness example (1 vs 7 discordant pairs): p = 0.070; and closed forms 2 * 0.5^n for a one-sided split.
MCNEMAR = [((1, 7), 0.0703), ((7, 1), 0.0703), ((5, 0), 0.0625), ((0, 7), 0.0156), ((1, 1), 1.0), ((0, 0), 1.0),
           ((12, 5), 0.1435)]


@pytest.mark.parametrize("counts,expected", MCNEMAR)
def test_exact_mcnemar_matches_published_values(counts, expected) -> None:
    assert round(mcnemar_exact_p(*counts), 4) == expected


def test_paired_counts_only_the_seeds_both_arms_ran() -> None:
    rows = ([{"arm": "c", "seed": s, "success": s % 2 == 0} for s in range(10)]
            + [{"arm": "a", "seed": s, "success": s < 3} for s in range(2, 12)]
            + [{"arm": "a", "seed": 2, "success": False}])  # a repeated (arm, seed) counts once, as in the table
    result = paired(rows, "c", "a")
    # shared seeds 2..9: c succeeds on 2, 4, 6, 8; a on 2
    assert (result.seeds, result.both, result.only_arm, result.only_against) == (8, 1, 3, 0)
    assert result.difference == pytest.approx(3 / 8) and result.p == pytest.approx(0.25)


# --------------------------------------------------------------------------- arms, seeds, shards
def test_arm_specs() -> None:
    arms = parse_arms(["parents", "grid:a+b", "operators:a+b@0.6", "grid5:a+b"], ["a", "b"])
    ids = [a.id for a in arms]
    assert ids[:2] == ["a", "b"]
    assert ids[2:13] == [f"convex:a+b@{w},{c}" for w, c in zip(
        ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"],
        ["1", "0.9", "0.8", "0.7", "0.6", "0.5", "0.4", "0.3", "0.2", "0.1", "0"])]
    # operators reuse the grid's convex arm, add mixture and two linear arms outside [0, 1]; grid5 adds 0.25, 0.75
    assert ids[13:] == ["mixture:a+b@0.6,0.4", "linear:a+b@1.2,-0.2", "linear:a+b@-0.2,1.2",
                        "convex:a+b@0.25,0.75", "convex:a+b@0.75,0.25"]
    assert all(Arm.parse(i).id == i for i in ids)
    for bad, message in [("grid:a+c", "unknown parent"), ("grid:a", "exactly two"),
                         ("weights:a+b@1.5", "in \\[0, 1\\]"), ("nonsense", "unknown arm spec")]:
        with pytest.raises(ValueError, match=message):
            parse_arms([bad], ["a", "b"])


def test_seeds_and_shards() -> None:
    assert parse_seeds("5:8") == [5, 6, 7] and parse_seeds("1,9") == [1, 9]
    for bad in ("x", "3:3", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    arms = parse_arms(["weights:a+b@0,1"], ["a", "b"])
    everything = jobs(arms, [1, 2, 3])
    assert [(a.id, s) for a, s in everything[:2]] == [("convex:a+b@0,1", 1), ("convex:a+b@1,0", 1)]  # seed-major
    shards = [jobs(arms, [1, 2, 3], (i, 4)) for i in range(4)]
    assert sorted((a.id, s) for sh in shards for a, s in sh) == sorted((a.id, s) for a, s in everything)


# --------------------------------------------------------------------------- writing, resuming, merging
def test_rows_are_whole_lines_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "episodes.shard-0-of-1.jsonl"
    append_row(path, {"arm": "a", "seed": 1, "success": True})
    with path.open("ab") as f:  # what a kill in the middle of a write could leave
        f.write(b'{"arm": "a", "seed": 2, "succ')
    assert [r["seed"] for r in read_rows(path)] == [1]
    append_row(path, {"arm": "a", "seed": 3, "success": False})
    assert [r["seed"] for r in read_rows(path)] == [1, 3]
    assert path.read_text().count("\n") == 2


def test_results_folder_refuses_another_benchmark(tmp_path: Path) -> None:
    identity = {**IDENTITY, "cell": {"size": (160, 120)}}  # a tuple is stored as a JSON list
    open_results(tmp_path, identity)
    open_results(tmp_path, identity)  # same benchmark: fine
    with pytest.raises(ResultsMismatchError, match=r"another benchmark \(differs in \['parents'\]\)"):
        open_results(tmp_path, {**identity, "parents": {"a": 1, "b": 3}})  # names only what differs


def test_the_same_weights_loaded_from_another_place_are_the_same_benchmark(tmp_path: Path) -> None:
    def identity(label: str, sha: str = "f00d") -> dict:
        return {"format": "test", "parents": {"a": {"checkpoint": label, "weights_sha256": sha}}}

    first = open_results(tmp_path / "shipped", identity("push_red_diffusion_rgb"))
    append_row(first / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": 1, "success": True})
    second = open_results(tmp_path / "folder", identity("ckpt_3000"))
    append_row(second / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": 2, "success": False})
    open_results(first, identity("ckpt_3000"))  # the label is not what is measured
    assert len(episode_rows([first, second])) == 2
    with pytest.raises(ResultsMismatchError, match=r"differs in \['parents'\]"):
        open_results(first, identity("push_red_diffusion_rgb", sha="beef"))  # other weights are
    other = open_results(tmp_path / "other", identity("x", sha="beef"))
    append_row(other / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": 3, "success": False})
    with pytest.raises(ResultsMismatchError, match="another benchmark"):
        episode_rows([first, other])


def test_a_parent_run_alone_merges_with_its_pair_and_a_different_parent_does_not(tmp_path: Path) -> None:
    def identity(parents: dict, steps: int = 10) -> dict:
        return {"format": "test", "settings": {"steps": steps},
                "parents": {n: {"checkpoint": "x", "weights_sha256": sha} for n, sha in parents.items()}}

    pair = open_results(tmp_path / "pair", identity({"rgb": "f00d", "flow": "beef"}))
    append_row(pair / "episodes.shard-0-of-1.jsonl", {"arm": "convex:rgb+flow@0.5,0.5", "seed": 1, "success": True})
    alone = open_results(tmp_path / "alone", identity({"flow": "beef"}))
    append_row(alone / "episodes.shard-0-of-1.jsonl", {"arm": "flow", "seed": 1, "success": False})
    rows = episode_rows([pair, alone])
    assert sorted(r["arm"] for r in rows) == ["convex:rgb+flow@0.5,0.5", "flow"]
    other = open_results(tmp_path / "other", identity({"flow": "cafe"}))  # other weights under the same name
    assert len(episode_rows([pair, other])) == 1  # ... that none of its episodes uses: no clash
    append_row(other / "episodes.shard-0-of-1.jsonl", {"arm": "flow", "seed": 2, "success": False})
    with pytest.raises(ResultsMismatchError, match=r"parent\(s\) \['flow'\] differ"):
        episode_rows([pair, other])
    with pytest.raises(ResultsMismatchError, match=r"parent\(s\) \['flow'\] differ"):  # either order
        episode_rows([other, pair])
    # a pair folder naming another 'flow' that no episode of it uses merges with this one's 'rgb' arm
    image = open_results(tmp_path / "image", identity({"rgb": "f00d", "pcd": "d00d", "flow": "cafe"}))
    append_row(image / "episodes.shard-0-of-1.jsonl", {"arm": "rgb", "seed": 1, "success": True,
                                                       "parents": ["rgb"]})
    append_row(image / "episodes.shard-0-of-1.jsonl", {"arm": "convex:rgb+pcd@0.9,0.1", "seed": 1, "success": True})
    assert len(episode_rows([pair, image])) == 3
    settings = open_results(tmp_path / "settings", identity({"flow": "beef"}, steps=20))
    with pytest.raises(ResultsMismatchError, match="another benchmark"):
        episode_rows([pair, settings])


def test_two_shards_merge_to_the_same_table_as_one_run(tmp_path: Path) -> None:
    arms = parse_arms(["weights:a+b@0.2,0.8", "a"], ["a", "b"])
    seeds = list(range(100, 110))
    one = open_results(tmp_path / "one", IDENTITY)
    assert run_arms(one, arms, seeds, fake_backend, progress=False) == 30
    # shards on "two machines" (two folders), merged by the report
    for i in range(2):
        run_arms(open_results(tmp_path / f"shard{i}", IDENTITY), arms, seeds, fake_backend, (i, 2), progress=False)
    merged = table(episode_rows([tmp_path / "shard0", tmp_path / "shard1"]), arms)
    single = table(episode_rows([one]), arms)
    assert [r.stats() for r in merged] == [r.stats() for r in single]
    assert [r.episodes for r in single] == [10, 10, 10] and 0 < sum(r.successes for r in single) < 30
    # shards of one folder: two files in the same folder
    both = open_results(tmp_path / "both", IDENTITY)
    for i in range(2):
        run_arms(both, arms, seeds, fake_backend, (i, 2), progress=False)
    assert len(list(both.glob("episodes.*.jsonl"))) == 2
    assert [r.stats() for r in table(episode_rows([both]), arms)] == [r.stats() for r in single]
    # a folder of another benchmark is not merged
    open_results(tmp_path / "other", {"format": "other"})
    with pytest.raises(ResultsMismatchError, match="another benchmark"):
        episode_rows([one, tmp_path / "other"])


def test_a_rerun_runs_only_what_is_missing(tmp_path: Path) -> None:
    arms = parse_arms(["weights:a+b@0,1"], ["a", "b"])
    out = open_results(tmp_path, IDENTITY)
    ran: list = []
    assert run_arms(out, arms, [1, 2, 3], lambda: fake_backend(ran), max_episodes=4, progress=False) == 4
    assert run_arms(out, arms, [1, 2, 3], lambda: fake_backend(ran), progress=False) == 2
    assert run_arms(out, arms, [1, 2, 3], lambda: fake_backend(ran), progress=False) == 0
    assert len(ran) == 6 and len(set(ran)) == 6


KILLED_RUN = textwrap.dedent("""
    import contextlib, sys, time
    from pathlib import Path
    from gpc_ros.benchmark.plan import parse_arms
    from gpc_ros.benchmark.results import open_results
    from gpc_ros.benchmark.runner import run_arms
    out, hang_at = Path(sys.argv[1]), int(sys.argv[2])
    count = [0]
    @contextlib.contextmanager
    def backend():
        def episode(arm, seed):
            count[0] += 1
            if count[0] == hang_at:  # in the middle of an episode: say so, then wait to be killed
                (out / "hanging").write_text(f"{arm.id} {seed}")
                time.sleep(600)
            return {"success": seed % 2 == 0, "wall_s": 0.0}
        yield episode
    arms = parse_arms(["weights:a+b@0.5,1"], ["a", "b"])
    run_arms(open_results(out, {"format": "test"}), arms, [1, 2], backend, progress=False)
""")


def test_runner_resumes_after_being_killed_mid_episode(tmp_path: Path) -> None:
    """2 seeds x 2 weights; the process is SIGKILLed during its third episode, then the same command finishes."""
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(out), "3"], env=env)
    try:
        def running() -> None:
            assert proc.poll() is None, "the run ended before it reached the third episode"

        wait_until((out / "hanging").exists, 120.0, "the run to reach its third episode", period_s=0.05,
                   check=running)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_in = (out / "hanging").read_text()
    rows = episode_rows([out])
    assert len(rows) == 2 and killed_in not in {f"{r['arm']} {r['seed']}" for r in rows}
    subprocess.run([sys.executable, str(script), str(out), "0"], env=env, check=True, timeout=120)
    rows = episode_rows([out])
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted(
        [("convex:a+b@0.5,0.5", 1), ("convex:a+b@1,0", 1), ("convex:a+b@0.5,0.5", 2), ("convex:a+b@1,0", 2)])
    assert sum(len(read_rows(p)) for p in out.glob("episodes.*.jsonl")) == 4  # nothing twice
    assert [r.successes for r in table(rows)] == [1, 1]


# --------------------------------------------------------------------------- the online weight search
def test_bandit_resumes_exactly_and_reports_episodes_to_best(tmp_path: Path) -> None:
    seeds = list(range(500, 540))
    straight = open_results(tmp_path / "straight", IDENTITY)
    run_bandit(straight, ("a", "b"), seeds, 40, fake_backend, search_seed=3, progress=False)
    cut = open_results(tmp_path / "cut", IDENTITY)
    run_bandit(cut, ("a", "b"), seeds, 17, fake_backend, search_seed=3, progress=False)
    run_bandit(cut, ("a", "b"), seeds, 40, fake_backend, search_seed=3, progress=False)
    a = read_rows(straight / "bandit.a+b.jsonl")
    b = read_rows(cut / "bandit.a+b.jsonl")
    assert [(r["arm_index"], r["seed"], r["success"]) for r in a] == [(r["arm_index"], r["seed"], r["success"])
                                                                      for r in b]
    assert [r["episode"] for r in b] == list(range(40))
    with pytest.raises(ResultsMismatchError, match="search-seed"):
        replay_search(a, ("a", "b"), 4)
    search = replay_search(a, ("a", "b"), 3)
    best = search.best().index
    n = episodes_to_best(a, ("a", "b"), best, 3)
    assert n is not None and 1 <= n <= 40
    assert episodes_to_best(a, ("a", "b"), (best + 5) % 11, 3) is None


def test_parents_alone_stand_for_unmeasured_grid_endpoints_only_when_asked() -> None:
    from gpc_ros.benchmark.runner import grid_arm_ids, grid_best

    def rows(arm: str, successes: int, n: int = 10) -> list[dict]:
        return [{"arm": arm, "seed": s, "success": s < successes} for s in range(n)]

    measured = rows("a", 8) + rows("b", 1) + rows("convex:a+b@0.5,0.5", 5) + rows("convex:a+b@0.8,0.2", 6)
    results = table(measured)
    assert grid_best(results, ("a", "b")) == 8  # the parents alone are not grid arms by default
    assert grid_best(results, ("a", "b"), parents_as_endpoints=True) == 10
    assert grid_arm_ids(results, ("a", "b"), True) == {"a": 10, "b": 0, "convex:a+b@0.5,0.5": 5,
                                                       "convex:a+b@0.8,0.2": 8}
    # a measured endpoint is never replaced by the parent alone
    results = table(measured + rows("convex:a+b@1,0", 2))
    assert grid_best(results, ("a", "b"), parents_as_endpoints=True) == 8
    assert "a" not in grid_arm_ids(results, ("a", "b"), True)


# --------------------------------------------------------------------------- bad input on the command line
def test_cli_bad_input_is_one_sentence_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from gpc_ros.cli import main

    out = tmp_path / "results"
    code = main(["benchmark", "run", "--parent", "rgb=no_such_parent", "--arms", "parents", "--seeds", "1:3",
                 "--out", str(out)])
    assert code == 2 and "no shipped parent named 'no_such_parent'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "run", "--parent", "rgb=x", "--arms", "parents", "--seeds", "a:b", "--out", str(out)])
    assert "--seeds must be START:STOP" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "run", "--parent", "rgb", "--arms", "parents", "--seeds", "1", "--out", str(out)])
    assert "--parent must be NAME=CHECKPOINT" in capsys.readouterr().err
    assert not out.exists()


def test_report_merges_folders_plots_each_pair_and_summarises_the_bandit(tmp_path: Path) -> None:
    from gpc_ros.benchmark.report import report

    arms = parse_arms(["parents", "grid:a+b"], ["a", "b"])
    seeds = list(range(100, 120))
    for i in range(2):
        run_arms(open_results(tmp_path / f"s{i}", IDENTITY), arms, seeds, fake_backend, (i, 2), progress=False)
    run_bandit(tmp_path / "s0", ("a", "b"), list(range(500, 530)), 30, fake_backend, progress=False)
    text = report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "plots", tmp_path / "table.json")
    lines = text.splitlines()
    assert lines[2].startswith("| `a` |") and lines[3].startswith("| `b` |")  # parents first, then w_a descending
    assert lines[4].startswith("| `convex:a+b@1,0` |") and lines[14].startswith("| `convex:a+b@0,1` |")
    single = table(episode_rows([tmp_path / "s0", tmp_path / "s1"]), arms)
    row = next(r for r in single if r.arm == "convex:a+b@0.8,0.2")
    assert f"| `convex:a+b@0.8,0.2` | {100 * row.rate:.0f} % ({row.successes}/20) |" in text
    assert (tmp_path / "plots" / "success_vs_weight_a+b.png").stat().st_size > 1000
    (bandit,) = json.loads((tmp_path / "table.json").read_text())["bandits"]
    assert bandit["episodes"] == 30 and bandit["grid_episodes"] == 220
    assert bandit["grid_best"] == max((r for r in single if r.arm.startswith("convex")),
                                      key=lambda r: (r.rate, r.wilson_low, r.episodes)).arm
    assert "bandit a+b: 30 episodes" in text
    # every composition paired with the better parent alone (a: 30 % of the seeds by construction, b too: the same
    # stand-in outcome), on the 20 seeds both ran
    rows = episode_rows([tmp_path / "s0", tmp_path / "s1"])
    comparisons = json.loads((tmp_path / "table.json").read_text())["paired_with_best_parent"]
    assert len(comparisons) == 11 and all(c["seeds"] == 20 for c in comparisons)
    c08 = next(c for c in comparisons if c["arm"] == "convex:a+b@0.8,0.2")
    expected = paired(rows, "convex:a+b@0.8,0.2", c08["against"])
    assert (c08["both"], c08["only_arm"], c08["only_against"], c08["p"]) == (
        expected.both, expected.only_arm, expected.only_against, expected.p)
    assert f"| `convex:a+b@0.8,0.2` | `{c08['against']}` | 20 | {expected.both} |" in text


def test_a_rerun_on_other_seeds_is_compared_arm_by_arm_with_the_table(tmp_path: Path) -> None:
    """Known counts: a at 50/100 in the table ([40.4, 59.6] %), re-run 12/40 (30 %: outside, yet the intervals
    [18.1, 45.4] and the table's overlap); b at 50/100, re-run 2/40 (5 %, [1.4, 16.5]: no overlap); c only in the
    table (not compared)."""
    from gpc_ros.benchmark.report import report
    from gpc_ros.benchmark.results import agreement

    identity = {"format": "test", "parents": {"a": 1, "b": 2, "c": 3}}
    main, again = open_results(tmp_path / "main", identity), open_results(tmp_path / "again", identity)
    for seed in range(100):
        for arm in ("a", "b", "c"):
            append_row(main / "episodes.shard-0-of-1.jsonl", {"arm": arm, "seed": seed, "success": seed % 2 == 0})
    for seed in range(300, 340):
        append_row(again / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": seed, "success": seed < 312})
        append_row(again / "episodes.shard-0-of-1.jsonl", {"arm": "b", "seed": seed, "success": seed < 302})
    a, b = agreement(episode_rows([main]), episode_rows([again]))
    assert (a.arm, a.rerun.successes, a.rerun.episodes, a.rerun_inside, a.overlap) == ("a", 12, 40, False, True)
    assert (b.arm, b.rerun.successes, b.rerun_inside, b.overlap) == ("b", 2, False, False)
    assert round(a.table.wilson_low, 3) == 0.404 and round(b.rerun.wilson_high, 3) == 0.165
    text = report([main], json_path=tmp_path / "t.json", rerun=[again])
    assert "| `a` | 50 % (50/100) [40, 60] | 30 % (12/40) [18, 45] | **no** | yes |" in text
    assert "1 of 2 arms: the intervals overlap; 0 of 2: the re-run's rate is inside the table's interval." in text
    saved = json.loads((tmp_path / "t.json").read_text())["rerun_agreement"]
    assert [(s["arm"], s["overlap"]) for s in saved] == [("a", True), ("b", False)]
    # the same seeds are not a re-run; another benchmark is not either
    append_row(again / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": 7, "success": True})
    with pytest.raises(ValueError, match="other seeds; 1 .arm, seed. pairs"):
        report([main], rerun=[again])
    other = open_results(tmp_path / "other", {"format": "other", "parents": {"a": 1}})
    append_row(other / "episodes.shard-0-of-1.jsonl", {"arm": "a", "seed": 500, "success": True})
    with pytest.raises(ResultsMismatchError, match="another benchmark"):
        report([main], rerun=[other])


def test_grid_arms_tied_for_best_all_count_as_the_grids_best() -> None:
    """Two grid weights with the same successes out of the same episodes are both the grid's best: a search that
    settles on either has found it (the colour RGB + DP3 grid has w_rgb 0.9 and 0.8 at 61/100 each)."""
    from gpc_ros.benchmark.runner import grid_best, grid_best_ties

    def rows(arm: str, successes: int, n: int = 10, first: int = 0) -> list[dict]:
        return [{"arm": arm, "seed": s, "success": s < first + successes} for s in range(first, first + n)]

    measured = rows("convex:a+b@0.9,0.1", 6) + rows("convex:a+b@0.8,0.2", 6, first=100) + rows("convex:a+b@0.5,0.5", 3)
    results = table(measured)
    assert grid_best(results, ("a", "b")) == 9 and grid_best_ties(results, ("a", "b")) == [9, 8]
    # the same rate from more episodes is not a tie: its interval is narrower, and it is the best alone
    assert grid_best_ties(table(measured + rows("convex:a+b@0.7,0.3", 12, n=20)), ("a", "b")) == [7]
    assert grid_best_ties(table(rows("convex:a+b@0.5,0.5", 3)), ("a", "b")) == [5]
    assert grid_best_ties(table(rows("a", 3)), ("a", "b")) == []
    # a search whose best ends on the tied arm 8 (and never on 9) has settled on "the grid's best"
    search_rows = [{"arm_index": 8, "success": True}] * 12 + [{"arm_index": 2, "success": False}] * 3
    assert episodes_to_best(search_rows, ("a", "b"), 9) is None
    n = episodes_to_best(search_rows, ("a", "b"), [9, 8])
    assert n is not None and n == episodes_to_best(search_rows, ("a", "b"), 8)
