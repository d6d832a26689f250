"""Composition of analytic Gaussian parents against closed-form expectations.

Derivation (stated once, used by every test here). A parent's target is ``x0 ~ N(mu, v)`` per action element.
At noise level ``(a, s)``, ``x = a x0 + s eps`` has variance ``a^2 v + s^2`` and ``Cov(eps, x) = s``,
``Cov(x0, x) = a v``, so the exact predictions are affine in ``x``::

    eps(x) = s (x - a mu) / (a^2 v + s^2),        x0(x) = mu + a v (x - a mu) / (a^2 v + s^2)

hence the composed ``eps_hat = sum_i w_i eps_i = A x + b`` and ``x0_hat = sum_i w_i x0_i = C x + d`` are affine
too, and so is every deterministic sampler step:

* DDIM (eta = 0, Song et al. eq. 12): ``x' = a' x0_hat + s' eps_hat`` with ``x0_hat = (x - s eps_hat) / a``;
* flow Euler on ``x_t = (1 - t) x0 + t eps``: ``x' = x + (t' - t) (eps_hat - x0_hat)``;

while DDPM (Ho et al., ``fixed_small`` variance) adds independent noise:
``x' = c0 x0_hat + c1 x + sqrt(beta~) z`` with ``c0 = sqrt(abar') beta / (1 - abar)``,
``c1 = sqrt(alpha) (1 - abar') / (1 - abar)``, ``beta~ = (1 - abar') beta / (1 - abar)``, ``beta = 1 - abar / abar'``.
Starting from ``x_T ~ N(0, 1)`` the composed chunk is therefore exactly ``P x_T + q`` (+ Gaussian noise for DDPM)
with ``P``, ``q`` (and the variance) obtained by iterating these scalar maps — computed here in float64 from the
schedule alone. Two special cases have a closed-form TARGET: with ``w = (1, 0)`` the sampler must approach parent
1's ``N(mu1, v1)``; with equal variances ``v1 = v2 = v``, ``eps_hat`` is exactly the eps of ``N(w . mu, v)`` at every
noise level (``eps`` is affine in ``mu`` with a coefficient independent of ``mu``), so the convex composition must
approach ``N(w1 mu1 + w2 mu2, v)``. With unequal variances the composed ODE does NOT sample the product
distribution; the test checks the distribution the recursion above predicts instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from gpc_ros.compose import (
    Composer,
    ComposerConfig,
    FlowTime,
    Parameterization,
    SamplerConfig,
    VPTime,
    make_vp_scheduler,
)
from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.compose.sampler import make_sampler

H, D = 6, 2


def _eps_x0_coeffs(a: float, s: float, mu: float, v: float) -> tuple[float, float, float, float]:
    """eps(x) = A x + b and x0(x) = C x + d for one Gaussian parent at level (a, s)."""
    den = a * a * v + s * s
    return s / den, -s * a * mu / den, a * v / den, mu - a * a * v * mu / den


def _composed_coeffs(a, s, weights, mus, vs, unnormalized=False):
    A = b = C = d = 0.0
    for w, mu, v in zip(weights, mus, vs):
        ai, bi, ci, di = _eps_x0_coeffs(a, s, mu, v)
        A, b, C, d = A + w * ai, b + w * bi, C + w * ci, d + w * di
    if unnormalized:  # x0 follows from eps_hat
        C, d = (1 - s * A) / a, -s * b / a
    return A, b, C, d


def _ddim_affine(weights, mus, vs, steps, unnormalized=False) -> tuple[float, float]:
    """Final x = P x_T + q for DDIM eta=0 on the cosine T=100 grid (diffusers 'leading' spacing, final abar = 1)."""
    abar = make_vp_scheduler("ddim").alphas_cumprod.double().numpy()
    ts = list(range(0, 100, 100 // steps))[::-1]
    P, q = 1.0, 0.0
    for i, t in enumerate(ts):
        a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
        A, b, _, _ = _composed_coeffs(a, s, weights, mus, vs, unnormalized)
        # x0_hat = (x - s eps_hat)/a ; x' = sqrt(prev) x0_hat + sqrt(1 - prev) eps_hat
        k_x = math.sqrt(prev) * (1 - s * A) / a + math.sqrt(1 - prev) * A
        k_0 = math.sqrt(prev) * (-s * b) / a + math.sqrt(1 - prev) * b
        P, q = k_x * P, k_x * q + k_0
    return P, q


def _ddpm_moments(weights, mus, vs, steps) -> tuple[float, float]:
    """Mean and variance of DDPM's output (fixed_small variance, no clipping) from x_T ~ N(0, 1)."""
    abar = make_vp_scheduler("ddpm").alphas_cumprod.double().numpy()
    ts = list(range(0, 100, 100 // steps))[::-1]
    m, var = 0.0, 1.0
    for i, t in enumerate(ts):
        a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
        beta = 1 - abar[t] / prev
        c0, c1 = math.sqrt(prev) * beta / (1 - abar[t]), math.sqrt(1 - beta) * (1 - prev) / (1 - abar[t])
        _, _, C, dd = _composed_coeffs(a, s, weights, mus, vs)
        k_x, k_0 = c0 * C + c1, c0 * dd
        noise_var = max((1 - prev) / (1 - abar[t]) * beta, 1e-20) if t > 0 else 0.0
        m, var = k_x * m + k_0, k_x * k_x * var + noise_var
    return m, var


def _flow_affine(weights, mus, vs, steps) -> tuple[float, float]:
    """Final x = P x_1 + q for flow Euler on t_k = 1 - k/N, started from x_1 = eps."""
    t = np.linspace(1.0, 0.0, steps + 1)
    P, q = 1.0, 0.0
    for k in range(steps):
        A, b, C, d = _composed_coeffs(1 - t[k], t[k], weights, mus, vs)
        dt = t[k + 1] - t[k]
        k_x, k_0 = 1 + dt * (A - C), dt * (b - d)
        P, q = k_x * P, k_x * q + k_0
    return P, q


def _parents(mus, vs, sampler_kind: str, kinds=("epsilon", "epsilon")) -> list[GaussianParent]:
    """Parents whose time convention matches the composer grid exactly (VP on VP grids, flow on flow grids)."""
    out = []
    for i, (mu, v, kind) in enumerate(zip(mus, vs, kinds)):
        convention = FlowTime() if sampler_kind.startswith("flow") else VPTime.from_scheduler(make_vp_scheduler())
        out.append(GaussianParent(f"p{i + 1}", kind, convention, H, D, var=v))
    return out


def _compose(parents, mus, weights, sampler: SamplerConfig, n: int, seed: int = 0, operator: str = "convex",
             unnormalized: bool = False, noise: torch.Tensor | None = None) -> torch.Tensor:
    config = ComposerConfig(operator=operator, allow_unnormalized_weights=unnormalized, sampler=sampler,
                            dtype="float64", return_parent_chunks=False)
    composer = Composer(parents, config)
    enc = composer.encode([torch.full((n, H, D), float(mu), dtype=torch.float64) for mu in mus])
    return composer.compose(enc, weights, generator=seed, noise=noise).actions_normalized[0]


NO_CLIP = dict(clip_sample=False)
EXACT = 1e-6  # diffusers computes its step coefficients in float32; any wrong term is off by >= 1e-3
MUS, VS = (0.8, -0.4), (0.05, 0.2)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.3, 0.7), (0.5, 0.5)])
@pytest.mark.parametrize("steps", [10, 25])
def test_ddim_composition_is_exactly_the_closed_form_affine_map(weights, steps) -> None:
    """Per sample: DDIM eta=0 output == P x_T + q (float64), for unequal variances where no simpler target exists."""
    noise = torch.randn(64, H, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = _compose(_parents(MUS, VS, "ddim"), MUS, weights,
                   SamplerConfig("ddim", steps, **NO_CLIP), n=64, noise=noise)
    P, q = _ddim_affine(weights, MUS, VS, steps)
    torch.testing.assert_close(out, P * noise + q, rtol=0, atol=EXACT)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.3, 0.7)])
def test_flow_euler_composition_is_exactly_the_closed_form_affine_map(weights) -> None:
    noise = torch.randn(64, H, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = _compose(_parents(MUS, VS, "flow_euler", ("flow_velocity", "flow_velocity")), MUS, weights,
                   SamplerConfig("flow_euler", 20), n=64, noise=noise)
    P, q = _flow_affine(weights, MUS, VS, 20)
    torch.testing.assert_close(out, P * noise + q, rtol=0, atol=EXACT)


def test_product_of_experts_weights_follow_the_score_sum() -> None:
    """AND: w = (1, 1) with the unnormalised linear operator: eps_hat = eps_1 + eps_2, x0 from eps_hat."""
    noise = torch.randn(32, H, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = _compose(_parents(MUS, VS, "ddim"), MUS, (1.0, 1.0), SamplerConfig("ddim", 10, **NO_CLIP), n=32,
                   operator="linear", unnormalized=True, noise=noise)
    P, q = _ddim_affine((1.0, 1.0), MUS, VS, 10, unnormalized=True)
    torch.testing.assert_close(out, P * noise + q, rtol=0, atol=EXACT)


@pytest.mark.parametrize("sampler", ["ddim", "flow_euler"])
def test_weight_one_zero_reproduces_parent_one_target(sampler: str) -> None:
    """w = (1, 0) with 100 steps: the sampler's exact output law (recursion) is parent 1's N(mu1, v1) up to the
    sampler's own discretisation bias (mean < 2e-3, variance -6 % DDIM / -4.6 % Euler for this narrow v1 = 0.05),
    and 20 000 samples match that law within 5 standard errors (parent 2's mean is 240 SE away)."""
    kinds = ("epsilon", "sample") if sampler == "ddim" else ("flow_velocity", "v_prediction")
    n = 20_000 // H // D
    out = _compose(_parents(MUS, VS, sampler, kinds), MUS, (1.0, 0.0), SamplerConfig(sampler, 100, **NO_CLIP),
                   n=n, seed=11)
    P, q = (_ddim_affine if sampler == "ddim" else _flow_affine)((1.0, 0.0), MUS, VS, 100)
    assert q == pytest.approx(MUS[0], abs=2e-3) and P * P == pytest.approx(VS[0], rel=0.08)
    samples = out.flatten()
    assert abs(float(samples.mean()) - q) < 5 * math.sqrt(P * P / samples.numel())
    assert abs(float(samples.var()) - P * P) < 5 * P * P * math.sqrt(2 / samples.numel())


@pytest.mark.parametrize("sampler", ["ddim", "flow_heun"])
def test_equal_variance_convex_composition_is_exactly_the_gaussian_of_the_mixed_mean(sampler: str) -> None:
    """v1 = v2: composing N(mu1, v) and N(mu2, v) with w gives, sample for sample, what ONE parent N(w . mu, v)
    gives from the same noise (the analytic target of the composition, exact at every noise level)."""
    mus, w = (1.0, -0.5), (0.3, 0.7)
    kinds = ("epsilon", "v_prediction") if sampler == "ddim" else ("flow_velocity", "sample")
    noise = torch.randn(64, H, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    config = SamplerConfig(sampler, 10, **NO_CLIP)
    composed = _compose(_parents(mus, (0.1, 0.1), sampler, kinds), mus, w, config, n=64, noise=noise)
    mixed_mean = w[0] * mus[0] + w[1] * mus[1]
    single = _compose(_parents((mixed_mean,), (0.1,), sampler, kinds[1:]), (mixed_mean,), (1.0,), config, n=64,
                      noise=noise)
    torch.testing.assert_close(composed, single, rtol=0, atol=EXACT)


def test_ddpm_equal_variance_composition_matches_the_analytic_target() -> None:
    """Equal variances: the convex composition targets N(w . mu, v). DDPM's exact output moments (recursion) have
    that mean (1e-3) and a variance ~10 % low (fixed_small variance omits Var[x0 | x_t]); 24 000 samples match the
    recursion within 5 standard errors."""
    mus, vs, w = (1.0, -0.5), (0.1, 0.1), (0.3, 0.7)
    target_mean = w[0] * mus[0] + w[1] * mus[1]
    m, var = _ddpm_moments(w, mus, vs, 100)
    assert m == pytest.approx(target_mean, abs=1e-3) and var == pytest.approx(vs[0], rel=0.12)
    n = 24_000 // H // D
    out = _compose(_parents(mus, vs, "ddpm"), mus, w, SamplerConfig("ddpm", 100, **NO_CLIP), n=n, seed=2)
    samples = out.flatten()
    assert abs(float(samples.mean()) - m) < 5 * math.sqrt(var / samples.numel())
    assert abs(float(samples.var()) - var) < 5 * var * math.sqrt(2 / samples.numel())


def test_ddpm_unequal_variance_composition_matches_its_recursion() -> None:
    """Unequal variances, 10 DDPM steps: sample moments match the recursion's mean and variance (5 SE); the
    recursion differs from parent 1's and parent 2's own moments by far more than the tolerance."""
    w, n = (0.4, 0.6), 30_000 // H // D
    m, var = _ddpm_moments(w, MUS, VS, 10)
    out = _compose(_parents(MUS, VS, "ddpm"), MUS, w, SamplerConfig("ddpm", 10, **NO_CLIP), n=n, seed=9)
    samples = out.flatten()
    se_m, se_v = math.sqrt(var / samples.numel()), var * math.sqrt(2 / samples.numel())
    assert abs(float(samples.mean()) - m) < 5 * se_m
    assert abs(float(samples.var()) - var) < 5 * se_v
    assert min(abs(m - MUS[0]), abs(m - MUS[1])) > 50 * se_m


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "flow_euler", "flow_heun"])
def test_same_gaussian_as_eps_sample_v_and_flow_parent_composes_identically(sampler: str) -> None:
    """One N(mu, v) written as an epsilon parent (cosine T=100), a sample parent (linear T=1000), a v parent
    (scaled_linear T=1000) and a flow-velocity parent (t x 1000): each alone, and convex compositions of all four,
    give the same chunk from the same seed (time alignment + conversions are exact; DDPM's step noise too)."""
    mu, v, n = 0.3, 0.07, 16
    linear = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scaled = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    vp_grid = sampler in ("ddim", "ddpm")
    parents = [
        GaussianParent("eps", "epsilon", VPTime.from_scheduler(make_vp_scheduler(), integer_timesteps=vp_grid),
                       H, D, v),
        GaussianParent("sample", "sample", VPTime.from_scheduler(linear, integer_timesteps=False), H, D, v),
        GaussianParent("v", Parameterization.V_PREDICTION, VPTime.from_scheduler(scaled, integer_timesteps=False),
                       H, D, v),
        GaussianParent("flow", "flow_velocity", FlowTime(1000.0), H, D, v),
    ]
    config = ComposerConfig(sampler=SamplerConfig(sampler, 10, clip_sample=False, flow_t_start=0.95),
                            dtype="float64", return_parent_chunks=False)
    obs = torch.full((n, H, D), mu)

    def run(ps, weights) -> torch.Tensor:
        composer = Composer(ps, config)
        return composer.compose(composer.encode([obs] * len(ps)), weights, generator=7).actions[0]

    reference = run(parents[:1], [1.0])
    assert float(reference.std()) > 0.1  # random draws, not a constant
    for parent in parents[1:]:
        torch.testing.assert_close(run([parent], [1.0]), reference, rtol=0, atol=EXACT, msg=parent.name)
    for weights in ([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]):
        torch.testing.assert_close(run(parents, weights), reference, rtol=0, atol=EXACT)


def test_mixture_operator_samples_the_mixture() -> None:
    """OR with w = (0.3, 0.7) of N(-2, 0.05) and N(2, 0.05): whole chunks come from one parent each, 70 % of them
    from parent 2 (binomial, 5 SE), and each group has the mean that parent alone produces (5 SE)."""
    mus, vs, n = (-2.0, 2.0), (0.05, 0.05), 2000
    out = _compose(_parents(mus, vs, "ddim"), mus, (0.3, 0.7), SamplerConfig("ddim", 20, **NO_CLIP), n=n,
                   operator="mixture", seed=4)
    chunk_means = out.mean(dim=(1, 2))
    from_two = chunk_means > 0
    assert bool(((out > 0) == from_two[:, None, None]).all())  # no chunk mixes the two parents
    frac = float(from_two.double().mean())
    assert abs(frac - 0.7) < 5 * math.sqrt(0.21 / n)
    for group, one_hot in ((from_two, (0.0, 1.0)), (~from_two, (1.0, 0.0))):
        P, q = _ddim_affine(one_hot, mus, vs, 20)  # that parent alone (its mean, 1 % short of mu at 20 steps)
        values = out[group]
        assert abs(float(values.mean()) - q) < 5 * math.sqrt(P * P / values.numel())


def test_linear_operator_accepts_cfg_style_weights_and_extrapolates() -> None:
    """w = (1.5, -0.5) on equal variances is eps of N(1.5 mu1 - 0.5 mu2, v): beyond parent 1 away from parent 2."""
    mus, vs = (0.5, -0.5), (0.1, 0.1)
    noise = torch.randn(32, H, D, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = _compose(_parents(mus, vs, "ddim"), mus, (1.5, -0.5), SamplerConfig("ddim", 10, **NO_CLIP), n=32,
                   operator="linear", noise=noise)
    P, q = _ddim_affine((1.5, -0.5), mus, vs, 10)
    torch.testing.assert_close(out, P * noise + q, rtol=0, atol=EXACT)
    assert _ddim_affine((1.5, -0.5), mus, vs, 100)[1] == pytest.approx(1.0, abs=1e-3)  # 1.5 mu1 - 0.5 mu2


def test_samplers_built_from_a_parent_scheduler_use_its_schedule() -> None:
    linear = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    sampler = make_sampler(SamplerConfig("ddpm", 20, num_train_timesteps=1000), scheduler=linear)
    assert sampler.points[0].time == 950
    assert sampler.points[0].level.alpha == pytest.approx(math.sqrt(float(linear.alphas_cumprod[950])))
