"""Samplers on the composer's grid: DDPM and DDIM (diffusers' own ``step``), flow Euler and flow Heun.

A sampler owns the composer's grid of noise levels (index 0 = noisiest) and takes one step from the composed
``(eps_hat, x0_hat)`` of the current point. Every step acts on the whole ``(M, H, D)`` batch, so all candidate
weight vectors share each parent forward pass.

* DDPM / DDIM: the step IS diffusers' ``DDPMScheduler.step`` / ``DDIMScheduler.step`` fed ``eps_hat`` (the
  composer's copy of the scheduler is set to ``prediction_type="epsilon"``; clipping, variance type, ``eta`` and
  timestep spacing are diffusers'). Grid point ``k``: ``alpha = sqrt(abar[t_k])``, ``sigma = sqrt(1 - abar[t_k])``.
* Flow: grid ``t_k = t_start (1 - k / N)``, ``k = 0..N``; Euler ``x <- x + (t_{k+1} - t_k) (eps_hat - x0_hat)``
  (the flow velocity, same update as diffusers' ``FlowMatchEulerDiscreteScheduler.step``); Heun adds the
  trapezoidal corrector with a second evaluation at ``t_{k+1}`` (skipped on the last step, where ``t = 0``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from gpc_ros.compose.schedule import NoiseLevel, make_vp_scheduler, vp_level

SAMPLER_KINDS = ("ddpm", "ddim", "flow_euler", "flow_heun")


@dataclass(frozen=True)
class GridPoint:
    """One point of the composer's grid: position ``index``, exact noise ``level``, and the grid's own time label
    (diffusers integer timestep for DDPM/DDIM, flow ``t`` for flow samplers)."""

    index: int
    level: NoiseLevel
    time: float


Denoise = Callable[[torch.Tensor, GridPoint], tuple[torch.Tensor, torch.Tensor]]
"""``(x (M, H, D), point) -> (eps_hat, x0_hat)``, both ``(M, H, D)``."""


@dataclass(frozen=True)
class SamplerConfig:
    """The composer's sampler and grid."""

    # --- which integrator
    kind: Literal["ddpm", "ddim", "flow_euler", "flow_heun"] = "ddim"
    """``ddpm`` | ``ddim`` (diffusers) | ``flow_euler`` | ``flow_heun``."""
    num_inference_steps: int = 10
    """Steps per chunk (network calls per parent per chunk, twice minus one for Heun)."""
    # --- VP grid (ddpm/ddim): the diffusers schedule Diffusion Policy / DP3 train with
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    """Clip ``x0_hat`` to [-1, 1] inside the diffusers step (normalised actions)."""
    eta: float = 0.0
    """DDIM stochasticity (0 = deterministic)."""
    # --- flow grid
    flow_t_start: float = 1.0
    """First flow time (1 = pure noise)."""

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"SamplerConfig.kind must be one of {SAMPLER_KINDS}; got {self.kind!r}")
        if not (isinstance(self.num_inference_steps, int) and self.num_inference_steps >= 1):
            raise ValueError(f"SamplerConfig.num_inference_steps must be an int >= 1; got {self.num_inference_steps!r}")
        if self.kind in ("ddpm", "ddim") and self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"SamplerConfig.num_inference_steps must be <= num_train_timesteps ({self.num_train_timesteps}); "
                f"got {self.num_inference_steps}")
        if not self.eta >= 0.0:
            raise ValueError(f"SamplerConfig.eta must be >= 0; got {self.eta}")
        if not 0.0 < self.flow_t_start <= 1.0:
            raise ValueError(f"SamplerConfig.flow_t_start must be in (0, 1]; got {self.flow_t_start}")


class Sampler(ABC):
    """A grid of noise levels and the update between consecutive points."""

    uses_x0: bool = True
    """Whether :meth:`step` reads ``x0_hat`` (else only ``eps_hat``; the composer may then derive ``x0_hat``)."""

    @property
    @abstractmethod
    def points(self) -> list[GridPoint]:
        """The grid, noisiest first; ``len(points)`` steps per full chunk."""

    @abstractmethod
    def step(self, x: torch.Tensor, eps_hat: torch.Tensor, x0_hat: torch.Tensor, point: GridPoint,
             generator: torch.Generator | None) -> torch.Tensor:
        """``x`` at ``point`` -> ``x`` at the next point (the clean chunk after the last point)."""

    @abstractmethod
    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """A chunk ``x0`` noised to grid point ``index`` (warm start)."""

    def initial(self, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
                device: torch.device | str = "cpu") -> torch.Tensor:
        """Pure noise at grid point 0."""
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def run(self, x: torch.Tensor, denoise: Denoise, generator: torch.Generator | None,
            start_index: int = 0) -> torch.Tensor:
        """Integrate from ``points[start_index]`` to the clean chunk."""
        for point in self.points[start_index:]:
            eps_hat, x0_hat = denoise(x, point)
            x = self.step(x, eps_hat, x0_hat, point, generator)
        return x


class DiffusersSampler(Sampler):
    """DDPM or DDIM through a (copied) diffusers scheduler predicting epsilon."""

    uses_x0 = False

    def __init__(self, scheduler: DDPMScheduler | DDIMScheduler, num_inference_steps: int, eta: float = 0.0) -> None:
        if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            raise TypeError(f"scheduler must be a diffusers DDPMScheduler or DDIMScheduler; got {type(scheduler)}")
        self.scheduler = type(scheduler).from_config(scheduler.config, prediction_type="epsilon")
        self.scheduler.set_timesteps(num_inference_steps)
        self.eta = eta
        abar = self.scheduler.alphas_cumprod
        self._points = [GridPoint(i, vp_level(abar, int(t)), float(t))
                        for i, t in enumerate(self.scheduler.timesteps)]

    @property
    def points(self) -> list[GridPoint]:
        return self._points

    def step(self, x, eps_hat, x0_hat, point, generator):
        t = int(point.time)
        if isinstance(self.scheduler, DDIMScheduler):
            return self.scheduler.step(eps_hat, t, x, eta=self.eta, generator=generator).prev_sample
        return self.scheduler.step(eps_hat, t, x, generator=generator).prev_sample

    def renoise(self, x0, noise, index):
        timestep = torch.tensor([int(self._points[index].time)])
        return self.scheduler.add_noise(x0, noise, timestep)


class FlowSampler(Sampler):
    """Rectified-flow Euler (``heun=False``) or Heun on ``t_k = t_start (1 - k / N)``."""

    def __init__(self, num_inference_steps: int, heun: bool = False, t_start: float = 1.0) -> None:
        self.heun = heun
        self.t = torch.linspace(t_start, 0.0, num_inference_steps + 1, dtype=torch.float64).tolist()
        self._points = [GridPoint(i, NoiseLevel(1.0 - t, t), t) for i, t in enumerate(self.t[:-1])]
        self._denoise: Denoise | None = None

    @property
    def points(self) -> list[GridPoint]:
        return self._points

    def step(self, x, eps_hat, x0_hat, point, generator):
        dt = self.t[point.index + 1] - self.t[point.index]
        velocity = eps_hat - x0_hat
        x_next = x + dt * velocity
        t_next = self.t[point.index + 1]
        if not self.heun or t_next <= 0.0 or self._denoise is None:
            return x_next
        next_point = GridPoint(point.index + 1, NoiseLevel(1.0 - t_next, t_next), t_next)
        eps2, x02 = self._denoise(x_next, next_point)
        return x + dt * 0.5 * (velocity + (eps2 - x02))

    def run(self, x, denoise, generator, start_index=0):
        self._denoise = denoise
        try:
            return super().run(x, denoise, generator, start_index)
        finally:
            self._denoise = None

    def renoise(self, x0, noise, index):
        t = self.t[index]
        return (1.0 - t) * x0 + t * noise

    def initial(self, shape, generator, dtype, device="cpu"):
        return self.t[0] * super().initial(shape, generator, dtype, device)


def make_sampler(config: SamplerConfig, scheduler: DDPMScheduler | DDIMScheduler | None = None) -> Sampler:
    """The sampler of ``config``; DDPM/DDIM use ``scheduler`` if given (its schedule), else one built from config."""
    if config.kind in ("ddpm", "ddim"):
        if scheduler is None:
            scheduler = make_vp_scheduler(config.kind, config.num_train_timesteps, config.beta_schedule,
                                          config.clip_sample)
        elif (config.kind == "ddpm") != isinstance(scheduler, DDPMScheduler):
            raise ValueError(f"SamplerConfig.kind={config.kind!r} does not match scheduler {type(scheduler).__name__}")
        return DiffusersSampler(scheduler, config.num_inference_steps, config.eta)
    return FlowSampler(config.num_inference_steps, heun=config.kind == "flow_heun", t_start=config.flow_t_start)


def network_calls_per_chunk(sampler: Sampler, start_index: int = 0) -> int:
    """Parent forward passes per chunk (per parent) from ``start_index``."""
    steps = len(sampler.points) - start_index
    if isinstance(sampler, FlowSampler) and sampler.heun:
        return 2 * steps - 1 if steps else 0
    return steps


__all__ = ["SAMPLER_KINDS", "DiffusersSampler", "FlowSampler", "GridPoint", "Sampler", "SamplerConfig",
           "make_sampler", "network_calls_per_chunk"]
