"""Time alignment between parents trained on different schedules (VP tables of diffusers, rectified flow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from gpc_ros.compose.schedule import FlowTime, NoiseLevel, VPTime, make_vp_scheduler, vp_level


def test_same_schedule_maps_every_timestep_to_itself() -> None:
    scheduler = make_vp_scheduler("ddpm")
    convention = VPTime.from_scheduler(scheduler)
    for t in range(100):
        where = convention.locate(vp_level(scheduler.alphas_cumprod, t))
        assert where.value == t
        assert where.x_scale == pytest.approx(1.0, abs=1e-12)


def test_other_vp_schedule_gets_the_timestep_of_equal_snr() -> None:
    """A linear-beta T=1000 parent seen from a cosine T=100 grid: its (fractional) timestep has the same SNR."""
    cosine = make_vp_scheduler("ddpm")
    linear = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    convention = VPTime.from_scheduler(linear, integer_timesteps=False)
    for t in (10, 40, 70, 90):
        level = vp_level(cosine.alphas_cumprod, t)
        where = convention.locate(level)
        assert where.level.log_snr == pytest.approx(level.log_snr, abs=1e-9)
        k = int(where.value)  # the table brackets the SNR
        table = np.log(linear.alphas_cumprod.double().numpy() / (1 - linear.alphas_cumprod.double().numpy()))
        assert table[k] >= level.log_snr >= table[k + 1]
        assert convention.noise_level(where.value).alpha == pytest.approx(level.alpha, rel=1e-9)
    rounded = VPTime.from_scheduler(linear).locate(vp_level(cosine.alphas_cumprod, 40))
    assert rounded.value == round(convention.locate(vp_level(cosine.alphas_cumprod, 40)).value)


def test_vp_to_flow_rescales_x_and_keeps_snr() -> None:
    """x_flow = x_vp / (alpha + sigma) at t = sigma / (alpha + sigma); the implied eps and x0 are unchanged."""
    alpha, sigma = 0.6, 0.8
    where = FlowTime(time_scale=1000.0).locate(NoiseLevel(alpha, sigma))
    t = sigma / (alpha + sigma)
    assert where.value == pytest.approx(1000 * t)
    assert where.x_scale == pytest.approx(1 / (alpha + sigma))
    x0, eps = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.2, dtype=torch.float64)
    x_vp = alpha * x0 + sigma * eps
    assert float(x_vp * where.x_scale) == pytest.approx(float((1 - t) * x0 + t * eps))
    assert where.level.log_snr == pytest.approx(NoiseLevel(alpha, sigma).log_snr)


def test_flow_to_vp_rescales_by_the_norm() -> None:
    t = 0.25
    where = VPTime.from_scheduler(make_vp_scheduler("ddpm"), integer_timesteps=False).locate(NoiseLevel(1 - t, t))
    assert where.x_scale == pytest.approx(1 / math.hypot(1 - t, t))
    assert where.level.alpha ** 2 + where.level.sigma ** 2 == pytest.approx(1.0)


def test_out_of_table_snr_clamps_to_the_table_ends() -> None:
    convention = VPTime.from_scheduler(make_vp_scheduler("ddpm"), integer_timesteps=False)
    assert convention.locate(NoiseLevel(0.0, 1.0)).value == 99
    assert convention.locate(NoiseLevel(1.0, 0.0)).value == 0


@pytest.mark.parametrize("bad", [(-0.1, 1.0), (0.0, 0.0)])
def test_bad_noise_level_is_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="NoiseLevel"):
        NoiseLevel(*bad)
