"""Regression tests of the correctness pass (issue 10, items 1-5), against exact references computed here.

Item 1, the reference. On a flow Euler grid ``t_k = t0 (1 - k / N)`` the composer's level is ``(1 - t, t)``. A VP
parent on a diffusers table gets the integer timestep of equal log-SNR (rounded; clamped to the table's ends
outside it) and ``x`` scaled by ``c = 1 / hypot(1 - t, t)``; a flow parent gets ``t`` and ``x`` unscaled. A
parent evaluates its exact Gaussian prediction at the level ``(a, s)`` of the time it is GIVEN (that is what a
trained network does), so with ``den = a^2 v + s^2``::

    eps_i(x) = s (c x - a mu) / den,          x0_i(x) = mu + a v (c x - a mu) / den

and the composer must recover exactly this pair from the raw output whatever the parameterisation. The composed
Euler step ``x' = x + dt (sum_i w_i (eps_i - x0_i))`` is affine in ``x``; from ``x = t0 eps`` the chunk is
``P eps + q``: mean ``q``, variance ``P^2``. Everything below is recomputed from the table alone (numpy, float64),
not through gpc_ros.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from gpc_ros.compose import (
    ActionNormalization,
    Composer,
    ComposerConfig,
    FlowTime,
    SamplerConfig,
    VPTime,
    make_vp_scheduler,
)
from gpc_ros.compose.analytic import GaussianParent

STEPS, T0 = 50, 0.999
ABAR = make_vp_scheduler("ddpm", 100).alphas_cumprod.double().numpy()  # squaredcos_cap_v2, 100 steps
MU, VAR = (3.0, -1.0), (0.01, 0.5)  # the eps (VP) parent and the flow parent (old code: z = -9.8 at 100k)
W = (0.8, 0.2)


def _vp_parent_level(t: float) -> tuple[float, float, float, bool]:
    """(a, s, c, clamped) the VP parent works at on the flow level (1 - t, t), from the table alone."""
    log_snr = 2 * math.log((1 - t) / t)
    table = np.log(ABAR) - np.log1p(-ABAR)  # decreasing with the timestep
    clamped = not table[-1] <= log_snr <= table[0]
    timestep = int(round(float(np.interp(log_snr, table[::-1], np.arange(100.0)[::-1]))))
    return math.sqrt(ABAR[timestep]), math.sqrt(1 - ABAR[timestep]), 1 / math.hypot(1 - t, t), clamped


def _exact_affine(weights=W, mus=MU, vs=VAR, steps=STEPS, t0=T0) -> tuple[float, float, int]:
    """Final chunk = P eps + q for the mixed (VP eps, flow) pair; also how many grid levels leave the VP table."""
    t = np.linspace(t0, 0.0, steps + 1)
    p_coef, q_coef, clamped_levels = t0, 0.0, 0
    for k in range(steps):
        a1, s1, c1, clamped = _vp_parent_level(t[k])
        clamped_levels += clamped
        a2, s2, c2 = 1 - t[k], t[k], 1.0
        slope = offset = 0.0  # eps_hat - x0_hat = slope x + offset
        for w, (a, s, c), mu, v in zip(weights, [(a1, s1, c1), (a2, s2, c2)], mus, vs):
            den = a * a * v + s * s
            eps_x, eps_0 = s * c / den, -s * a * mu / den
            x0_x, x0_0 = a * v * c / den, mu - a * a * v * mu / den
            slope, offset = slope + w * (eps_x - x0_x), offset + w * (eps_0 - x0_0)
        dt = t[k + 1] - t[k]
        p_coef, q_coef = (1 + dt * slope) * p_coef, (1 + dt * slope) * q_coef + dt * offset
    return p_coef, q_coef, clamped_levels


def _mixed_pair(vp_kind: str = "epsilon", h: int = 100, d: int = 200) -> Composer:
    vp = GaussianParent("vp", vp_kind, VPTime.from_scheduler(make_vp_scheduler("ddpm", 100)), h, d, var=VAR[0])
    flow = GaussianParent("flow", "flow_velocity", FlowTime(), h, d, var=VAR[1])
    return Composer([vp, flow], ComposerConfig(sampler=SamplerConfig("flow_euler", STEPS, flow_t_start=T0),
                                               dtype="float64", return_parent_chunks=False))


def _encodings(composer: Composer, b: int) -> list[torch.Tensor]:
    return composer.encode([torch.full((b, p.action_horizon, p.action_dim), mu, dtype=torch.float64)
                            for p, mu in zip(composer.parents, MU)])


def test_the_grid_really_rounds_and_leaves_the_vp_table() -> None:
    """The case of the issue: 98.795 -> 99 at the first step, log-SNR 7.78 > 7.37 (clamped to 0) at the last."""
    t = np.linspace(T0, 0.0, STEPS + 1)
    table = np.log(ABAR) - np.log1p(-ABAR)
    assert abs(float(np.interp(2 * math.log((1 - T0) / T0), table[::-1], np.arange(100.0)[::-1])) - 98.795) < 1e-3
    assert 2 * math.log((1 - t[-2]) / t[-2]) > table[0] + 0.3
    assert _exact_affine()[2] >= 1


def test_mixed_eps_and_flow_pair_is_exactly_the_derived_affine_map() -> None:
    composer = _mixed_pair(h=8, d=3)
    noise = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    chunk = composer.compose(_encodings(composer, 2), W, noise=noise).actions_normalized[0]
    p_coef, q_coef, _ = _exact_affine()
    torch.testing.assert_close(chunk, p_coef * noise + q_coef, rtol=1e-9, atol=1e-9)


def test_mixed_eps_and_flow_pair_samples_the_derived_gaussian_within_4_se() -> None:
    composer = _mixed_pair()  # 1 x 100 x 200 = 20 000 independent elements per chunk
    samples = torch.cat([composer.compose(_encodings(composer, 1), W, generator=seed).actions_normalized.flatten()
                         for seed in range(5)]).numpy()  # 100 000 samples
    p_coef, q_coef, _ = _exact_affine()
    n, mean, var = samples.size, q_coef, p_coef ** 2
    assert abs(samples.mean() - mean) < 4 * math.sqrt(var / n), (samples.mean(), mean)
    assert abs(samples.var(ddof=1) - var) < 4 * var * math.sqrt(2 / (n - 1)), (samples.var(ddof=1), var)


@pytest.mark.parametrize("kind", ["sample", "v_prediction"])
def test_the_same_gaussian_gives_the_same_chunk_whatever_it_predicts_on_a_rounded_and_clamped_table(kind) -> None:
    """Sample for sample: the eps-parent, and the same Gaussian as x0- or v-parent (same table, same rounding)."""
    noise = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    as_eps, other = _mixed_pair("epsilon", 8, 3), _mixed_pair(kind, 8, 3)
    torch.testing.assert_close(other.compose(_encodings(other, 2), W, noise=noise).actions,
                               as_eps.compose(_encodings(as_eps, 2), W, noise=noise).actions, rtol=0, atol=1e-9)


def test_the_same_gaussian_as_eps_and_as_flow_parent_on_a_flow_time_gives_the_same_chunk() -> None:
    def composer(kind: str) -> Composer:
        parents = [GaussianParent("a", kind, FlowTime(), 8, 3, var=VAR[0]),
                   GaussianParent("b", "flow_velocity", FlowTime(), 8, 3, var=VAR[1])]
        return Composer(parents, ComposerConfig(sampler=SamplerConfig("flow_euler", STEPS, flow_t_start=T0),
                                                dtype="float64", return_parent_chunks=False))

    noise = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps, flow = composer("epsilon"), composer("flow_velocity")
    torch.testing.assert_close(eps.compose(_encodings(eps, 2), W, noise=noise).actions,
                               flow.compose(_encodings(flow, 2), W, noise=noise).actions, rtol=0, atol=1e-9)


def test_leaving_a_parents_table_is_warned_once_and_counted(caplog) -> None:
    composer = _mixed_pair(h=4, d=2)
    with caplog.at_level(logging.WARNING, logger="gpc_ros.compose.composer"):
        for seed in range(2):
            composer.compose(_encodings(composer, 1), W, generator=seed)
    warnings = [r for r in caplog.records if "leaves the time range of parent 'vp'" in r.getMessage()]
    assert len(warnings) == 1
    assert composer.stats.out_of_range_levels == {"vp": _exact_affine()[2]} and composer.stats.chunks == 2


# --- item 2: clipping follows the normalisation, the same in every sampler ----------------------------------------

def _ddim_moments_without_clipping(mu: float, v: float, steps: int = 10) -> tuple[float, float]:
    """DDIM eta=0 on the 100-step cosine table ('leading' spacing, final abar = 1), x_T ~ N(0, 1), no clipping."""
    ts = list(range(0, 100, 100 // steps))[::-1]
    p_coef, q_coef = 1.0, 0.0
    for i, t in enumerate(ts):
        a, s = math.sqrt(ABAR[t]), math.sqrt(1 - ABAR[t])
        prev = ABAR[ts[i + 1]] if i + 1 < len(ts) else 1.0
        den = a * a * v + s * s
        e_x, e_0 = s / den, -s * a * mu / den
        k_x = math.sqrt(prev) * (1 - s * e_x) / a + math.sqrt(1 - prev) * e_x
        k_0 = -math.sqrt(prev) * s * e_0 / a + math.sqrt(1 - prev) * e_0
        p_coef, q_coef = k_x * p_coef, k_x * q_coef + k_0
    return q_coef, p_coef ** 2


@pytest.mark.parametrize("normalization", [ActionNormalization(), ActionNormalization.mean_std([0.0], [1.0])])
def test_default_ddim_does_not_clip_unbounded_normalisations(normalization) -> None:
    """N(1, 0.04) under identity or mean-std stats: the default config must sample it unclipped."""
    mu, v = 1.0, 0.04
    parent = GaussianParent("p", "epsilon", VPTime.from_scheduler(make_vp_scheduler()), 100, 1, var=v,
                            normalization=normalization)
    composer = Composer([parent], ComposerConfig(sampler=SamplerConfig("ddim", 10), dtype="float64",
                                                 return_parent_chunks=False))
    enc = composer.encode([torch.full((200, 100, 1), mu, dtype=torch.float64)])
    samples = composer.compose(enc, [1.0], generator=0).actions_normalized.flatten().numpy()  # 20 000
    mean, var = _ddim_moments_without_clipping(mu, v)
    n = samples.size
    assert abs(samples.mean() - mean) < 4 * math.sqrt(var / n), (samples.mean(), mean)
    assert abs(samples.var(ddof=1) - var) < 4 * var * math.sqrt(2 / (n - 1)), (samples.var(ddof=1), var)


@pytest.mark.parametrize("kind", ["ddim", "ddpm", "flow_euler", "flow_heun"])
def test_min_max_parents_are_clipped_by_every_sampler_and_others_by_none(kind: str) -> None:
    mu, v = 1.0, 0.04

    def sample(normalization: ActionNormalization) -> torch.Tensor:
        convention = FlowTime() if kind.startswith("flow") else VPTime.from_scheduler(make_vp_scheduler())
        parent = GaussianParent("p", "epsilon", convention, 50, 1, var=v, normalization=normalization)
        composer = Composer([parent], ComposerConfig(sampler=SamplerConfig(kind, 10, flow_t_start=0.99),
                                                     dtype="float64", return_parent_chunks=False))
        enc = composer.encode([torch.full((40, 50, 1), mu, dtype=torch.float64)])
        return composer.compose(enc, [1.0], generator=1).actions_normalized

    bounded = sample(ActionNormalization.min_max([-1.0], [1.0]))  # the identity map, but a bounded space
    assert float(bounded.abs().max()) <= 1.0 + 1e-9
    unbounded = sample(ActionNormalization())
    assert float((unbounded > 1.0).double().mean()) > 0.3  # half of N(1, 0.04) lies above 1, none is clipped


# --- item 3: given noise is scaled like drawn noise --------------------------------------------------------------

@pytest.mark.parametrize("t_start", [0.5, 1.0])
def test_given_noise_is_scaled_like_drawn_noise(t_start: float) -> None:
    parent = GaussianParent("p", "flow_velocity", FlowTime(), 6, 2, var=0.1)
    composer = Composer([parent], ComposerConfig(sampler=SamplerConfig("flow_euler", 10, flow_t_start=t_start),
                                                 dtype="float64", return_parent_chunks=False))
    enc = composer.encode([torch.full((3, 6, 2), 0.3, dtype=torch.float64)])
    noise = torch.randn((3, 6, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    given = composer.compose(enc, [1.0], noise=noise).actions
    drawn = composer.compose(enc, [1.0], generator=7).actions  # draws the same standard normal numbers
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)


# --- item 5: the tail of unequal horizons ------------------------------------------------------------------------

def _horizon_parents() -> list[GaussianParent]:
    vp = VPTime.from_scheduler(make_vp_scheduler())
    return [GaussianParent("short", "epsilon", vp, 4, 2, var=0.05), GaussianParent("long", "epsilon", vp, 8, 2,
                                                                                    var=0.05)]


def test_a_zero_weight_longer_parent_is_not_called_and_the_tail_holds_the_last_action() -> None:
    short, long = _horizon_parents()
    composer = Composer([short, long], ComposerConfig(sampler=SamplerConfig("ddim", 10), dtype="float64",
                                                      return_parent_chunks=False))
    enc = composer.encode([torch.full((3, 4, 2), 0.6, dtype=torch.float64),
                           torch.full((3, 8, 2), -0.6, dtype=torch.float64)])
    noise = torch.randn((3, 8, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    chunk = composer.compose(enc, (1.0, 0.0), noise=noise)
    assert long.calls == 0
    actions = chunk.actions_normalized[0]
    torch.testing.assert_close(actions[:, 4:], actions[:, 3:4].expand(3, 4, 2), rtol=0, atol=0)
    alone = Composer([short], ComposerConfig(sampler=SamplerConfig("ddim", 10), dtype="float64",
                                             return_parent_chunks=False))
    own = alone.compose(alone.encode([enc[0]]), [1.0], noise=noise[:, :4]).actions_normalized[0]
    torch.testing.assert_close(actions[:, :4], own, rtol=0, atol=1e-12)
    assert chunk.horizons.tolist() == [[4, 4, 4]]


def test_mixture_rows_are_exactly_the_drawn_parents_chunk_with_the_documented_tail() -> None:
    short, long = _horizon_parents()
    config = ComposerConfig(operator="mixture", sampler=SamplerConfig("ddim", 10), dtype="float64",
                            return_parent_chunks=False)
    composer = Composer([short, long], config)
    b = 64
    enc = composer.encode([torch.full((b, 4, 2), 0.6, dtype=torch.float64),
                           torch.full((b, 8, 2), -0.6, dtype=torch.float64)])
    noise = torch.randn((b, 8, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    actions = composer.compose(enc, (0.5, 0.5), generator=9, noise=noise).actions_normalized[0]
    own = {}
    for p, e in zip((short, long), enc):
        alone = Composer([p], ComposerConfig(sampler=SamplerConfig("ddim", 10), dtype="float64",
                                             return_parent_chunks=False))
        own[p.name] = alone.compose(alone.encode([e]), [1.0], noise=noise[:, :p.action_horizon]).actions_normalized[0]
    drew_short = (actions[:, :4] - own["short"]).abs().amax(dim=(1, 2)) < 1e-12
    drew_long = (actions - own["long"]).abs().amax(dim=(1, 2)) < 1e-12
    assert bool((drew_short ^ drew_long).all())  # every row is exactly one parent's own chunk
    assert 10 < int(drew_short.sum()) < b - 10
    held = actions[drew_short]
    torch.testing.assert_close(held[:, 4:], held[:, 3:4].expand(-1, 4, 2), rtol=0, atol=0)
