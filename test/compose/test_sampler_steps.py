"""With one parent and weight 1, each composed sampler step IS the diffusers scheduler step of that parent."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from gpc_ros.compose import Composer, ComposerConfig, FlowTime, SamplerConfig, VPTime
from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.compose.horizon import position_weights
from gpc_ros.compose.sampler import make_sampler

H, D, B = 8, 3, 5


def _one_parent_composer(parent, sampler_config, scheduler=None) -> Composer:
    config = ComposerConfig(sampler=sampler_config, return_parent_chunks=False)
    return Composer([parent], config, sampler=make_sampler(sampler_config, scheduler))


@pytest.mark.parametrize("kind,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("steps", [10, 100])
def test_each_vp_step_equals_the_diffusers_step(kind: str, eta: float, prediction_type: str, steps: int) -> None:
    """The parent predicts ``prediction_type`` under its own diffusers scheduler (clip_sample on, as Diffusion Policy
    trains); the composer converts to eps, steps with its epsilon copy of that scheduler, and must land where
    ``parent_scheduler.step(raw prediction)`` lands with the same generator seed, at every grid point."""
    cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    scheduler = cls(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                    prediction_type=prediction_type)
    scheduler.set_timesteps(steps)
    parent = GaussianParent("only", prediction_type, VPTime.from_scheduler(scheduler), H, D, var=0.3)
    composer = _one_parent_composer(parent, SamplerConfig(kind, steps, eta=eta, clip_sample=True), scheduler)
    enc = parent.encode(torch.linspace(-0.5, 0.5, B * H * D).reshape(B, H, D))
    weights = position_weights(torch.ones(B, 1, dtype=torch.float64), [H]).float()
    g = torch.Generator().manual_seed(1)
    for point in composer.sampler.points:
        x = 1.5 * torch.randn(B, H, D, generator=g)
        eps_hat, x0_hat = composer.denoise(x, point, [enc], weights)
        ours = composer.sampler.step(x, eps_hat, x0_hat, point, torch.Generator().manual_seed(point.index))
        raw = parent.predict(x, point.time, enc)
        extra = {"eta": eta} if kind == "ddim" else {}
        theirs = scheduler.step(raw, int(point.time), x, generator=torch.Generator().manual_seed(point.index),
                                **extra).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=2e-5, msg=f"step at t={point.time}")


def test_each_flow_euler_step_equals_flow_match_euler_discrete() -> None:
    """Flow Euler on t_k = 1 - k/N equals diffusers' FlowMatchEulerDiscreteScheduler.step given the same sigmas."""
    steps = 12
    parent = GaussianParent("flow", "flow_velocity", FlowTime(1000.0), H, D, var=0.2)
    composer = _one_parent_composer(parent, SamplerConfig("flow_euler", steps))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(sigmas=[p.time for p in composer.sampler.points])
    enc = parent.encode(torch.full((B, H, D), 0.4))
    weights = position_weights(torch.ones(B, 1, dtype=torch.float64), [H]).float()
    g = torch.Generator().manual_seed(2)
    for point, timestep in zip(composer.sampler.points, scheduler.timesteps):
        x = torch.randn(B, H, D, generator=g)
        eps_hat, x0_hat = composer.denoise(x, point, [enc], weights)
        ours = composer.sampler.step(x, eps_hat, x0_hat, point, None)
        theirs = scheduler.step(parent.predict(x, 1000.0 * point.time, enc), timestep, x).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_heun_is_second_order_and_euler_first_on_a_gaussian() -> None:
    """Halving the step size cuts Euler's error ~2x and Heun's ~4x (against a 2000-step Euler reference)."""
    parent = GaussianParent("flow", "flow_velocity", FlowTime(), H, D, var=0.3)
    noise = torch.randn(B, H, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(kind: str, steps: int) -> torch.Tensor:
        c = Composer([parent], ComposerConfig(sampler=SamplerConfig(kind, steps), dtype="float64",
                                              return_parent_chunks=False))
        return c.compose(c.encode([torch.full((B, H, D), 0.2)]), [1.0], noise=noise).actions[0]

    reference = run("flow_euler", 2000)
    err = {(k, n): float((run(k, n) - reference).abs().max()) for k in ("flow_euler", "flow_heun") for n in (8, 16)}
    assert 1.6 < err[("flow_euler", 8)] / err[("flow_euler", 16)] < 2.6
    assert err[("flow_heun", 8)] / err[("flow_heun", 16)] > 3.2
    assert err[("flow_heun", 16)] < err[("flow_euler", 16)] / 5
