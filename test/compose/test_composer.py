"""Composer behaviour: batched candidates, reproducibility, threads, unequal horizons, normalisation, warm start."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpc_ros.compose import (
    ActionNormalization,
    Composer,
    ComposerConfig,
    FlowTime,
    ParallelChooser,
    SamplerConfig,
    VPTime,
    WarmStart,
    WarmStartConfig,
    make_vp_scheduler,
)
from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.compose.errors import NonFinitePredictionError
from gpc_ros.compose.horizon import ZERO, position_weights
from gpc_ros.compose.search import paper_grid
from gpc_ros.compose.warm_start import shifted_chunk, start_index

D = 2
VP = VPTime.from_scheduler(make_vp_scheduler())


def gaussian(name: str, horizon: int = 8, kind: str = "epsilon", convention=VP, var: float = 0.1,
             normalization: ActionNormalization | None = None) -> GaussianParent:
    return GaussianParent(name, kind, convention, horizon, D, var, normalization)


def make(parents, **config) -> Composer:
    config.setdefault("sampler", SamplerConfig("ddim", 10, clip_sample=False))
    config.setdefault("dtype", "float64")
    return Composer(parents, ComposerConfig(**config))


def obs(value: float, horizon: int = 8, b: int = 4) -> torch.Tensor:
    return torch.full((b, horizon, D), value, dtype=torch.float64)


def test_eleven_candidates_take_one_forward_pass_per_parent_per_step_and_equal_one_at_a_time() -> None:
    a, b = gaussian("a", var=0.05), gaussian("b", kind="sample", var=0.2)
    c = make([a, b], return_parent_chunks=False)
    enc = c.encode([obs(0.5), obs(-0.5)])
    batched = c.compose(enc, paper_grid(), generator=3)
    assert a.calls == b.calls == 10 and batched.network_calls == 10
    assert batched.actions.shape == (11, 4, 8, D)
    for i, w in enumerate(paper_grid()):
        alone = c.compose(enc, w, generator=3)
        torch.testing.assert_close(alone.actions[0], batched.actions[i], rtol=0, atol=1e-12)
    # one at a time: 11 runs, but the w = (0, 1) / (1, 0) runs skip the zero-weight parent
    assert a.calls == b.calls == 10 + 10 * 10
    means = batched.actions.mean(dim=(1, 2, 3))
    assert bool((means[1:] > means[:-1]).all())  # more weight on the +0.5 parent -> larger actions


def test_same_seed_same_chunk_other_seed_other_chunk() -> None:
    for kind in ("ddpm", "ddim", "flow_euler"):
        conv = FlowTime() if kind.startswith("flow") else VP
        param = "flow_velocity" if kind.startswith("flow") else "epsilon"
        c = make([gaussian("a", kind=param, convention=conv), gaussian("b", kind=param, convention=conv)],
                 sampler=SamplerConfig(kind, 10), dtype="float32")
        enc = c.encode([obs(0.5), obs(-0.5)])
        first = c.compose(enc, (0.3, 0.7), generator=42).actions
        again = c.compose(enc, (0.3, 0.7), generator=torch.Generator().manual_seed(42)).actions
        other = c.compose(enc, (0.3, 0.7), generator=43).actions
        assert torch.equal(first, again), kind
        assert not torch.allclose(first, other), kind


@pytest.mark.parametrize("parallel_parents", [True, "auto"])
def test_parallel_parent_threads_give_the_same_chunk(parallel_parents) -> None:
    """Threads, and "auto" switching between threads and one after the other within a chunk: the same chunk."""
    parents = [gaussian("a"), gaussian("b", kind="v_prediction"), gaussian("c", kind="flow_velocity",
                                                                           convention=FlowTime())]
    observations = [obs(0.5), obs(-0.5), obs(0.1)]
    weights = paper_grid()[:, :1] * [1, 0, 0] + [0, 0.5, 0.5] * (1 - paper_grid()[:, :1])
    sequential = make(parents)
    want = sequential.compose(sequential.encode(observations), weights, generator=5)
    with make(parents, parallel_parents=parallel_parents) as parallel:
        for _ in range(3):  # "auto": probing (alternating paths) in the first chunk, its choice in the later ones
            got = parallel.compose(parallel.encode(observations), weights, generator=5)
            assert torch.equal(got.actions, want.actions)
            for name in "abc":
                assert torch.equal(got.parent_actions[name], want.parent_actions[name])
        stats = parallel.stats
    assert sequential.stats.sequential_steps == 10 and sequential.stats.parallel_steps == 0
    if parallel_parents is True:
        assert (stats.parallel_steps, stats.sequential_steps) == (30, 0)
    else:  # the first chunk alternated until 5 adjacent pairs were measured: both paths ran in it
        assert stats.parallel_steps >= 3 and stats.sequential_steps >= 3
        assert stats.parallel_steps + stats.sequential_steps == 30


class Rendezvous(GaussianParent):
    """A Gaussian parent whose ``predict`` records its thread and waits at a barrier shared by two parents.

    Both predictions of a step pass the barrier only if both are in progress at the same time, i.e. they
    overlap (the barrier's timeout is generous and only ends a broken run; nothing is timed).
    """

    def __init__(self, name: str, barrier, log: list) -> None:
        super().__init__(name, "epsilon", VP, 8, D, 0.1)
        self.barrier, self.log = barrier, log

    def predict(self, x_t, timestep, encoding):
        import threading

        self.log.append((self.name, "start", threading.get_ident()))
        self.barrier.wait()
        out = super().predict(x_t, timestep, encoding)
        self.log.append((self.name, "end", threading.get_ident()))
        return out


def test_parallel_parents_run_both_forwards_at_the_same_time_on_two_threads() -> None:
    import threading

    barrier, log = threading.Barrier(2, timeout=60.0), []
    parents = [Rendezvous("a", barrier, log), Rendezvous("b", barrier, log)]
    with make(parents, parallel_parents=True) as parallel:
        got = parallel.compose(parallel.encode([obs(0.5), obs(-0.5)]), (0.5, 0.5), generator=3)
    plain = [gaussian("a"), gaussian("b")]
    sequential = make(plain)
    want = sequential.compose(sequential.encode([obs(0.5), obs(-0.5)]), (0.5, 0.5), generator=3)
    assert torch.equal(got.actions, want.actions)
    assert not barrier.broken
    for step in range(10):  # per step: both started before either ended, on two different threads
        events = log[4 * step:4 * step + 4]
        assert [e[1] for e in events[:2]] == ["start", "start"]
        assert {e[0] for e in events[:2]} == {"a", "b"}
        assert len({e[2] for e in events}) == 2
    a_thread = {e[2] for e in log if e[0] == "a"}
    assert a_thread == {threading.get_ident()}  # the first parent on the calling thread, the second on the pool


class FakeClock:
    """A clock that a test advances by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_chooser(chooser: ParallelChooser, clock: FakeClock, steps: int, cost, chunk: int = 0) -> list[bool]:
    """``steps`` steps, each taking ``cost(step, parallel)`` s on ``clock``; the path each took.

    ``chunk`` > 0: a new chunk every ``chunk`` steps (``new_chunk``, as the composer calls it).
    """
    paths = []
    for step in range(steps):
        if chunk and step % chunk == 0:
            chooser.new_chunk(chunk)
        parallel = chooser.parallel_next()  # a step lasts until the next step's parallel_next
        clock.now += cost(step, parallel)
        paths.append(parallel)
    return paths


@pytest.mark.parametrize("threads_s,sequential_s,expect_threads", [
    (0.020, 0.040, True),    # big ops: the forwards overlap
    (0.012, 0.007, False),   # small ops: the GIL hand-overs cost more than the overlap saves
    (0.0301, 0.030, False),  # a tie goes to one after the other (no threads for nothing)
    (0.028, 0.030, False),   # 7 % faster is not enough for the threads' extra CPU time (margin 0.9)
    (0.026, 0.030, True),    # 13 % faster is
])
def test_the_chooser_alternates_first_then_keeps_the_faster_path_and_reprobes(
        threads_s, sequential_s, expect_threads) -> None:
    clock = FakeClock()
    chooser = ParallelChooser(probe=3, window=5, reprobe_every=10, clock=clock)
    assert chooser.faster() is None
    paths = run_chooser(chooser, clock, 40, lambda step, par: threads_s if par else sequential_s)
    # alternating until 3 pairs are measured (the first step is not measured; a step's time is known when the
    # next one begins): steps 1-2, 2-3, 3-4
    assert paths[:5] == [True, False, True, False, True]
    assert chooser.faster() is expect_threads
    reprobes = [i for i in range(5, 40) if paths[i] is not expect_threads]
    assert reprobes == [11, 21, 31]  # after every 10 measured steps, one step takes the other path


def test_the_chooser_follows_a_change_of_load_from_adjacent_pairs() -> None:
    """Threads are faster for 100 steps, then 2x slower; the choice flips within a few reprobes.

    A uniform slow-down of both paths (the machine got busier) does not flip it: only the ratio of adjacent
    steps counts.
    """
    clock = FakeClock()
    chooser = ParallelChooser(probe=3, window=5, reprobe_every=5, clock=clock)

    def cost(step: int, parallel: bool) -> float:
        load = 1.0 + 4.0 * ((step // 7) % 2)  # the whole machine 5x slower every other 7 steps
        if step < 100:
            return load * (0.02 if parallel else 0.04)
        return load * (0.08 if parallel else 0.04)

    paths = run_chooser(chooser, clock, 160, cost)
    assert sum(paths[20:100]) >= 60  # threads kept through the load swings (only reprobes went the other way)
    assert sum(paths[140:160]) <= 4  # after the change: one after the other, with a reprobe in threads


class SplitPhase:
    """A split-phase wrapper of a parent: ``submit`` logs and defers the prediction to ``result()``."""

    def __init__(self, parent: GaussianParent, log: list[str], poison: bool = False) -> None:
        self.parent, self.log, self.poison = parent, log, poison
        for attr in ("name", "parameterization", "time_convention", "action_horizon", "action_dim", "normalization"):
            setattr(self, attr, getattr(parent, attr))

    def encode(self, observation):
        return self.parent.encode(observation)

    def predict(self, x_t, timestep, encoding):
        self.log.append(f"predict {self.name}")
        return self.parent.predict(x_t, timestep, encoding)

    def submit(self, x_t, timestep, encoding):
        self.log.append(f"submit {self.name}")
        outer = self

        class Pending:
            def result(self):
                outer.log.append(f"result {outer.name}")
                out = outer.parent.predict(x_t, timestep, encoding)
                return out * float("nan") if outer.poison else out

        return Pending()


def test_split_phase_parents_are_all_submitted_before_any_is_awaited_and_give_the_same_chunk() -> None:
    observations = [obs(0.5), obs(-0.5), obs(0.1)]
    weights = paper_grid()[:, :1] * [1, 0, 0] + [0, 0.5, 0.5] * (1 - paper_grid()[:, :1])
    plain = [gaussian("a"), gaussian("b", kind="v_prediction"), gaussian("c", kind="flow_velocity",
                                                                          convention=FlowTime())]
    sequential = make(plain)
    want = sequential.compose(sequential.encode(observations), weights, generator=5)
    log: list[str] = []
    split = make([SplitPhase(p, log) for p in plain], parallel_parents=True)  # no pool thread used
    got = split.compose(split.encode(observations), weights, generator=5)
    assert torch.equal(got.actions, want.actions)
    for name in "abc":
        assert torch.equal(got.parent_actions[name], want.parent_actions[name])
    step = ["submit a", "submit b", "submit c", "result a", "result b", "result c"]
    assert log == step * 10
    # one called parent (the others at weight 0, no parent chunks): its plain predict
    log.clear()
    split.close()
    alone = make([SplitPhase(p, log) for p in plain], return_parent_chunks=False)
    alone.compose(alone.encode(observations), (0.0, 1.0, 0.0), generator=5)
    assert log == ["predict b"] * 10


def test_a_non_finite_split_phase_prediction_names_its_parent() -> None:
    log: list[str] = []
    c = make([SplitPhase(gaussian("a"), log), SplitPhase(gaussian("b"), log, poison=True)])
    with pytest.raises(NonFinitePredictionError, match=r"parent 'b' returned \d+ NaN/inf value\(s\) at step 0") as err:
        c.compose(c.encode([obs(0.5), obs(-0.5)]), (0.5, 0.5), generator=0)
    assert err.value.parent == "b" and log == ["submit a", "submit b", "result a", "result b"]


def test_position_weights_keep_the_longest_weighted_parents_tail() -> None:
    w = position_weights(torch.tensor([[0.25, 0.75], [1.0, 0.0], [1.5, -0.5]], dtype=torch.float64), [2, 4])
    assert w.shape == (3, 2, 4)
    torch.testing.assert_close(w[0, :, :2], torch.tensor([[0.25] * 2, [0.75] * 2], dtype=torch.float64))
    weighted = [0, 2]  # rows whose long parent has a non-zero weight: the tail is its own prediction
    torch.testing.assert_close(w[weighted, :, 2:], torch.tensor([[0.0, 1.0]], dtype=torch.float64)[:, :, None]
                               .expand(2, 2, 2))
    torch.testing.assert_close(w[weighted].sum(dim=1), torch.ones(2, 4, dtype=torch.float64))
    # w = (1, 0): no weighted parent covers the tail, so nobody is asked for it (the chunk holds its last action)
    assert bool((w[1, :, 2:] == 0).all()) and bool((w[1, 0, :2] == 1).all())


@settings(max_examples=50, deadline=None)
@given(w1=st.floats(0.0, 1.0), horizons=st.lists(st.integers(1, 6), min_size=2, max_size=4))
def test_position_weights_stay_convex_for_any_horizons(w1: float, horizons: list[int]) -> None:
    k = len(horizons)
    row = torch.tensor([[w1] + [(1 - w1) / (k - 1)] * (k - 1)], dtype=torch.float64)
    w = position_weights(row, horizons)
    reach = max(h for h, wi in zip(horizons, row[0]) if wi >= ZERO)  # composed length: longest weighted parent
    torch.testing.assert_close(w.sum(dim=1)[:, :reach], torch.ones(1, reach, dtype=torch.float64))
    assert bool((w[:, :, reach:] == 0).all())
    assert bool((w >= 0).all())
    for i, h in enumerate(horizons):
        assert bool((w[0, i, h:] == 0).all())  # no weight where a parent does not predict
    full = min(horizons)
    torch.testing.assert_close(w[0, :, :full], row[0][:, None].expand(k, full))  # overlap keeps w


def test_unequal_horizons_combine_on_the_overlap_and_keep_the_long_tail() -> None:
    """Short N(0.6, v) (H=4) and long N(-0.6, v) (H=8), equal variances, w = (0.5, 0.5): the first 4 steps are
    exactly a N(0, v) parent's, the last 4 exactly the long parent's own chunk (same noise)."""
    short, long = gaussian("short", horizon=4), gaussian("long", horizon=8)
    c = make([short, long])
    chunk = c.compose(c.encode([obs(0.6, 4), obs(-0.6, 8)]), (0.5, 0.5), generator=1)
    assert chunk.actions.shape == (1, 4, 8, D)
    assert chunk.parent_actions["short"].shape == (4, 4, D) and chunk.parent_actions["long"].shape == (4, 8, D)
    torch.testing.assert_close(chunk.actions[0, :, 4:], chunk.parent_actions["long"][:, 4:], rtol=0, atol=1e-12)
    middle = make([gaussian("middle", horizon=8)])
    reference = middle.compose(middle.encode([obs(0.0, 8)]), (1.0,), generator=1).actions[0]
    torch.testing.assert_close(chunk.actions[0, :, :4], reference[:, :4], rtol=0, atol=1e-9)


def test_actions_come_back_in_physical_units() -> None:
    """Parents share min-max stats: 0 normalised is the middle of [low, high]; chunks are unnormalised."""
    norm = ActionNormalization.min_max([0.2, -1.0], [0.6, 1.0])
    c = make([gaussian("a", var=1e-4, normalization=norm), gaussian("b", var=1e-4, normalization=norm)],
             sampler=SamplerConfig("ddim", 50, clip_sample=False))
    chunk = c.compose(c.encode([obs(0.5), obs(-0.5)]), (0.5, 0.5), generator=0)
    torch.testing.assert_close(chunk.actions, norm.unnormalize(chunk.actions_normalized))
    mean_per_dim = chunk.actions.mean(dim=(0, 1, 2))
    assert mean_per_dim.tolist() == pytest.approx([0.4, 0.0], abs=0.01)
    torch.testing.assert_close(norm.normalize(norm.unnormalize(chunk.actions_normalized)), chunk.actions_normalized)


def test_shifted_chunk_and_start_index() -> None:
    prev = torch.arange(12, dtype=torch.float64).reshape(1, 6, 2)
    shifted = shifted_chunk(prev, 2)
    assert shifted[0, :, 0].tolist() == [4, 6, 8, 10, 10, 10]
    assert shifted_chunk(prev, 2, "zeros")[0, :, 1].tolist() == [5, 7, 9, 11, 0, 0]
    assert [start_index(10, f) for f in (1.0, 0.5, 0.25, 0.01)] == [0, 5, 7, 9]


def test_warm_start_runs_the_remaining_steps_only_and_keeps_the_target() -> None:
    """Previous chunk drawn from the target N(mu, v) (i.i.d. elements, so shifted/padded it still has that
    marginal), re-noised to the middle of a 100-step DDPM grid: 50 calls instead of 100, the output still has
    the target law (the reverse chain from the true marginal at t is the same chain), within 5 SE + DDPM's own
    variance bias, and it is NOT the previous chunk (fresh noise was added)."""
    mu, v, b, h = 0.4, 0.1, 3000, 8
    p = gaussian("p", horizon=h, var=v)
    c = make([p], sampler=SamplerConfig("ddpm", 100, clip_sample=False),
             warm_start=WarmStartConfig(remaining_fraction=0.5), return_parent_chunks=False)
    prev = mu + math.sqrt(v) * torch.randn(b, h, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chunk = c.compose(c.encode([obs(mu, h, b)]), (1.0,), generator=1, warm_start=WarmStart(prev, executed_steps=3))
    assert chunk.network_calls == 50 and p.calls == 50
    out = chunk.actions[0]
    n = out.numel()
    assert abs(float(out.mean()) - mu) < 5 * math.sqrt(v / n)
    assert float(out.var()) == pytest.approx(v, rel=0.12)
    shifted = shifted_chunk(prev, 3)
    corr = torch.corrcoef(torch.stack([out.flatten(), shifted.flatten()]))[0, 1]
    assert 0.05 < float(corr) < 0.9


def test_warm_start_follows_a_changed_observation() -> None:
    """The previous chunk aimed at 0.8; the new observation says -0.8. Re-noised to mid-grid, the old chunk keeps
    only a fraction alpha of its signal, so half the steps move the result most of the way to the new target (a
    deterministic ODE does not erase all of it: that is the price of warm starting); a full chunk gets there."""
    p = gaussian("p", var=0.01)
    c = make([p], sampler=SamplerConfig("ddim", 10, clip_sample=False), return_parent_chunks=False)
    prev = torch.full((4, 8, D), 0.8, dtype=torch.float64)
    enc = c.encode([obs(-0.8)])
    chunk = c.compose(enc, (1.0,), generator=0, warm_start=WarmStart(prev, executed_steps=2))
    assert chunk.network_calls == 5
    assert -0.8 - 0.05 < float(chunk.actions.mean()) < -0.8 + 0.2 * 1.6  # >= 80 % of the way from 0.8 to -0.8
    assert float(c.compose(enc, (1.0,), generator=0).actions.mean()) == pytest.approx(-0.8, abs=0.05)


@pytest.mark.parametrize("threads_slower", [True, False])
def test_a_chunks_cold_first_step_does_not_bias_the_choice(threads_slower) -> None:
    """The first step of every 10-step chunk takes 3x as long (cold after the pause between chunks). Were it
    measured and paired with its neighbours, it would make whichever path it took look slower and the choice would
    flip back and forth. It is not measured and no pair spans two chunks, so the choice holds."""
    clock = FakeClock()
    chooser = ParallelChooser(clock=clock)  # the defaults: probe 5, window 9, reprobe every 50th step
    ratio = 1.3 if threads_slower else 0.7

    def cost(step: int, parallel: bool) -> float:
        return (3.0 if step % 10 == 0 else 1.0) * (0.010 * ratio if parallel else 0.010)

    paths = run_chooser(chooser, clock, 600, cost, chunk=10)
    assert chooser.faster() is (not threads_slower)
    reprobes = [i for i in range(100, 600) if paths[i] is threads_slower]
    assert len(reprobes) == 10  # 40 measured steps (8 of each 10-step chunk) between two reprobes
    assert all(i % 10 not in (0, 8, 9) for i in reprobes)  # both pairs of a reprobe inside its chunk
