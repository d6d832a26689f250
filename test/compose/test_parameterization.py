"""Exact conversions between epsilon, sample, v and flow-velocity predictions (tables of cases)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from gpc_ros.compose.parameterization import Parameterization, from_eps_x0, to_eps_x0

KINDS = list(Parameterization)


def _pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 4, 3, generator=g, dtype=torch.float64),
            torch.randn(5, 4, 3, generator=g, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), abar=st.floats(1e-4, 1 - 1e-4), seed=st.integers(0, 10_000))
def test_vp_round_trip_recovers_eps_and_x0(kind: Parameterization, abar: float, seed: int) -> None:
    """x = alpha x0 + sigma eps (VP); every parameterisation's prediction maps back to the same (eps, x0)."""
    if kind is Parameterization.FLOW_VELOCITY:
        return  # needs alpha + sigma = 1, covered below
    x0, eps = _pair(seed)
    a, s = math.sqrt(abar), math.sqrt(1 - abar)
    x = a * x0 + s * eps
    eps_back, x0_back = to_eps_x0(kind, from_eps_x0(kind, eps, x0, a, s), x, a, s)
    torch.testing.assert_close(eps_back, eps, rtol=0, atol=1e-7 / min(a, s))
    torch.testing.assert_close(x0_back, x0, rtol=0, atol=1e-7 / min(a, s))


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(KINDS), t=st.floats(1e-3, 1 - 1e-3), seed=st.integers(0, 10_000))
def test_flow_round_trip_recovers_eps_and_x0(kind: Parameterization, t: float, seed: int) -> None:
    """x_t = (1 - t) x0 + t eps: every parameterisation (incl. v with non-unit alpha^2 + sigma^2) round-trips."""
    x0, eps = _pair(seed)
    x = (1 - t) * x0 + t * eps
    eps_back, x0_back = to_eps_x0(kind, from_eps_x0(kind, eps, x0, 1 - t, t), x, 1 - t, t)
    torch.testing.assert_close(eps_back, eps, rtol=0, atol=1e-6 / min(t, 1 - t))
    torch.testing.assert_close(x0_back, x0, rtol=0, atol=1e-6 / min(t, 1 - t))


def test_flow_velocity_is_dx_dt_and_matches_the_lead_formulas() -> None:
    """v = d/dt[(1 - t) x0 + t eps] = eps - x0; eps = x_t + (1 - t) v, x0 = x_t - t v."""
    x0, eps = _pair(1)
    t, dt = 0.3, 1e-6
    v_numeric = (((1 - t - dt) * x0 + (t + dt) * eps) - ((1 - t) * x0 + t * eps)) / dt
    v = from_eps_x0(Parameterization.FLOW_VELOCITY, eps, x0, 1 - t, t)
    torch.testing.assert_close(v, v_numeric, rtol=0, atol=1e-6)
    x = (1 - t) * x0 + t * eps
    torch.testing.assert_close(x + (1 - t) * v, eps)
    torch.testing.assert_close(x - t * v, x0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_x0_agrees_with_diffusers_pred_original_sample(prediction_type: str) -> None:
    """diffusers' DDPMScheduler.step computes x0 from each prediction type; ours must give the same x0."""
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                              prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    pred = torch.randn(3, 8, 2, generator=g, dtype=torch.float64)
    for t in (99, 60, 10, 0):
        abar = float(scheduler.alphas_cumprod[t])
        _, x0 = to_eps_x0(Parameterization(prediction_type), pred, x, math.sqrt(abar), math.sqrt(1 - abar))
        expected = scheduler.step(pred, t, x, generator=torch.Generator().manual_seed(0)).pred_original_sample
        torch.testing.assert_close(x0, expected, rtol=1e-5, atol=1e-6)


def test_unknown_parameterization_names_field_allowed_values_and_value() -> None:
    with pytest.raises(ValueError, match=r"parent 'x' parameterization must be one of 'epsilon'.*got 'score'"):
        Parameterization.parse("score", field="parent 'x' parameterization")
