"""Training objectives: how a clean normalised chunk becomes (noisy input, network time, regression target).

Diffusion and flow parents differ only here (and in the sampler the core integrates them with):

* :class:`VPDiffusionObjective` — DDPM training as Diffusion Policy / DP3 do it with diffusers' ``DDPMScheduler``
  (``squaredcos_cap_v2``, 100 steps): integer ``t ~ U{0..T-1}``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``,
  target ``eps`` (``epsilon``), ``x0`` (``sample``) or ``v`` (``v_prediction``); the network time is ``t``.
* :class:`FlowMatchingObjective` — rectified flow: ``t ~ U(0, 1)`` (or logit-normal), ``x_t = (1 - t) x0 + t eps``,
  target the velocity ``eps - x0`` (the core's ``flow_velocity``); the network time is ``time_scale * t``.

Each objective also provides the core :class:`~gpc_ros.compose.schedule.TimeConvention` matching its training.
The noising and the targets are the core's own equations (:func:`~gpc_ros.compose.parameterization.forward` and
:func:`~gpc_ros.compose.parameterization.from_eps_x0` at the convention's noise level), so what a parent is trained
to output is exactly what the composer inverts with :func:`~gpc_ros.compose.parameterization.to_eps_x0`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from gpc_ros.compose.parameterization import Parameterization, forward, from_eps_x0
from gpc_ros.compose.schedule import (
    FlowTime,
    TimeConvention,
    VPTime,
    flow_alpha_sigma,
    make_vp_scheduler,
    vp_alpha_sigma,
)


class Objective(Protocol):
    """A training objective: noisy input, network time and regression target from a clean chunk."""

    parameterization: Parameterization
    time_convention: TimeConvention

    def training_example(self, x0: torch.Tensor, generator: torch.Generator | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x0 (B, H, D)`` -> ``(x_t (B, H, D), network_time (B,), target (B, H, D))``."""
        ...


class VPDiffusionObjective:
    """Variance-preserving DDPM objective on a diffusers schedule."""

    def __init__(self, parameterization: str, num_train_timesteps: int, beta_schedule: str,
                 clip_sample: bool) -> None:
        self.parameterization = Parameterization.parse(parameterization)
        if self.parameterization is Parameterization.FLOW_VELOCITY:
            raise ValueError("a VP diffusion objective predicts 'epsilon', 'sample' or 'v_prediction'; "
                             "got 'flow_velocity'")
        self.scheduler = make_vp_scheduler("ddpm", num_train_timesteps, beta_schedule, clip_sample,
                                           self.parameterization.value)
        self.time_convention: TimeConvention = VPTime.from_scheduler(self.scheduler, integer_timesteps=True)
        self.num_train_timesteps = num_train_timesteps

    @classmethod
    def from_config(cls, config) -> VPDiffusionObjective:
        """From a policy config with the VP schedule fields (``VPScheduleConfig``: RGB diffusion, DP3)."""
        return cls(config.parameterization, config.num_train_timesteps, config.beta_schedule, config.clip_sample)

    def training_example(self, x0, generator):
        """Integer ``t ~ U{0..T-1}``; ``x_t`` and the target at the table's level ``vp_alpha_sigma(abar_t)``."""
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator)
        abar = torch.as_tensor(self.time_convention.alphas_cumprod, dtype=torch.float64)[t]
        alpha, sigma = (v.to(x0.dtype).reshape((b,) + (1,) * (x0.dim() - 1)) for v in vp_alpha_sigma(abar))
        x_t = forward(x0, noise, alpha, sigma)
        return x_t, t.to(x0.dtype), from_eps_x0(self.parameterization, noise, x0, alpha, sigma)


class FlowMatchingObjective:
    """Rectified-flow velocity objective."""

    def __init__(self, time_scale: float, time_sampling: str = "uniform") -> None:
        self.parameterization = Parameterization.FLOW_VELOCITY
        self.time_convention = FlowTime(time_scale)
        self.time_scale = time_scale
        self.time_sampling = time_sampling

    def training_example(self, x0, generator):
        """``t ~ U(0, 1)`` (or logit-normal); ``x_t`` and the velocity target at the flow level ``(1 - t, t)``."""
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        if self.time_sampling == "logit_normal":
            t = torch.sigmoid(torch.randn((b,), generator=generator, dtype=x0.dtype))
        else:
            t = torch.rand((b,), generator=generator, dtype=x0.dtype)
        alpha, sigma = flow_alpha_sigma(t.reshape((b,) + (1,) * (x0.dim() - 1)))
        x_t = forward(x0, noise, alpha, sigma)
        return x_t, t * self.time_scale, from_eps_x0(self.parameterization, noise, x0, alpha, sigma)
