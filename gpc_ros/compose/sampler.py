"""Samplers on the composer's grid: DDPM and DDIM (diffusers' own ``step``), flow Euler and flow Heun.

A sampler owns the composer's grid of noise levels (index 0 = noisiest) and takes one step from the composed
``(eps_hat, x0_hat)`` of the current point. Every step acts on the whole ``(M, H, D)`` batch, so all candidate
weight vectors share each parent forward pass.

* DDPM / DDIM: the step IS diffusers' ``DDPMScheduler.step`` / ``DDIMScheduler.step`` fed ``eps_hat`` (the
  composer's copy of the scheduler is set to ``prediction_type="epsilon"``; clipping, variance type, ``eta`` and
  timestep spacing are diffusers'). Grid point ``k``: ``alpha = sqrt(abar[t_k])``, ``sigma = sqrt(1 - abar[t_k])``.
  diffusers is imported when such a sampler is built, not with this module.
* Flow: grid ``t_k = t_start (1 - k / N)``, ``k = 0..N``; Euler ``x <- x + (t_{k+1} - t_k) (eps_hat - x0_hat)``
  (the flow velocity, same update as diffusers' ``FlowMatchEulerDiscreteScheduler.step``); Heun adds the
  trapezoidal corrector with a second evaluation at ``t_{k+1}`` (skipped on the last step, where ``t = 0``).
  The chunk starts at ``x = t_start * eps`` (drawn or given ``eps``).

Clipping (``clip_sample``): ``x0_hat`` clipped to [-1, 1] and ``eps_hat`` moved with it so that
``x = alpha x0 + sigma eps`` still holds (what diffusers' DDPM/DDIM step does), applied by EVERY sampler when on.
``"auto"`` (default) turns it on exactly when the parents normalise actions with ``min_max`` (the only normalised
space that is bounded); identity and mean-std actions are never clipped unless ``clip_sample=True`` is explicit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from gpc_ros.compose.parameterization import Parameterization, from_eps_x0
from gpc_ros.compose.schedule import NoiseLevel, diffusers_schedulers, make_vp_scheduler, vp_level

if TYPE_CHECKING:  # annotations only: diffusers is imported when a DDPM/DDIM sampler is built
    from diffusers import DDIMScheduler, DDPMScheduler

SAMPLER_KINDS = ("ddpm", "ddim", "flow_euler", "flow_heun")


@dataclass(frozen=True)
class GridPoint:
    """One point of the composer's grid.

    ``index``: position on the grid; ``level``: its exact noise level; ``time``: the grid's own time label
    (diffusers integer timestep for DDPM/DDIM, flow ``t`` for flow samplers).
    """

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
    clip_sample: bool | Literal["auto"] = "auto"
    """Clip ``x0_hat`` to [-1, 1] in every step: ``"auto"`` = only for ``min_max``-normalised parents, or a bool."""
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
        if not (isinstance(self.clip_sample, bool) or self.clip_sample == "auto"):
            raise ValueError(f"SamplerConfig.clip_sample must be True, False or 'auto'; got {self.clip_sample!r}")
        if not self.eta >= 0.0:
            raise ValueError(f"SamplerConfig.eta must be >= 0; got {self.eta}")
        if not 0.0 < self.flow_t_start <= 1.0:
            raise ValueError(f"SamplerConfig.flow_t_start must be in (0, 1]; got {self.flow_t_start}")


class Sampler(ABC):
    """A grid of noise levels and the update between consecutive points."""

    uses_x0: bool = True
    """Whether :meth:`step` reads ``x0_hat`` (else only ``eps_hat``; the composer may then derive ``x0_hat``)."""
    clip_sample: bool | None = None
    """Clip ``x0_hat`` to [-1, 1]; ``None`` = not decided yet (the composer decides from the parents' normalisation,
    see :meth:`set_clip_sample`)."""

    def set_clip_sample(self, clip: bool) -> None:
        """Turn clipping of ``x0_hat`` to [-1, 1] on or off."""
        self.clip_sample = bool(clip)

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
                device: torch.device | str = "cpu", noise: torch.Tensor | None = None) -> torch.Tensor:
        """The chunk at grid point 0 from standard normal ``noise`` (drawn when ``None``)."""
        if noise is None:
            noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.scale_initial(noise.to(dtype))

    def scale_initial(self, noise: torch.Tensor) -> torch.Tensor:
        """Standard normal noise -> the chunk at grid point 0 (identity for VP grids)."""
        return noise

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

    def __init__(self, scheduler: DDPMScheduler | DDIMScheduler, num_inference_steps: int, eta: float = 0.0,
                 clip_sample: bool | None = None) -> None:
        ddpm, ddim = diffusers_schedulers()
        if not isinstance(scheduler, (ddpm, ddim)):
            raise TypeError(f"scheduler must be a diffusers DDPMScheduler or DDIMScheduler; got {type(scheduler)}")
        self._ddim = isinstance(scheduler, ddim)  # the copy made in set_clip_sample has the same type
        self._source = scheduler
        self._num_inference_steps = num_inference_steps
        self.eta = eta
        self.set_clip_sample(False if clip_sample is None else clip_sample)
        self.clip_sample = clip_sample
        abar = self.scheduler.alphas_cumprod
        self._points = [GridPoint(i, vp_level(abar, int(t)), float(t))
                        for i, t in enumerate(self.scheduler.timesteps)]

    def set_clip_sample(self, clip: bool) -> None:
        """Rebuild the diffusers scheduler copy with ``clip_sample=clip`` (and ``prediction_type="epsilon"``)."""
        super().set_clip_sample(clip)
        self.scheduler = type(self._source).from_config(self._source.config, prediction_type="epsilon",
                                                        clip_sample=bool(clip))
        self.scheduler.set_timesteps(self._num_inference_steps)

    @property
    def points(self) -> list[GridPoint]:
        """The scheduler's inference timesteps, noisiest first."""
        return self._points

    def step(self, x, eps_hat, x0_hat, point, generator):
        """Diffusers' own ``step`` fed ``eps_hat``."""
        t = int(point.time)
        if self._ddim:
            return self.scheduler.step(eps_hat, t, x, eta=self.eta, generator=generator).prev_sample
        return self.scheduler.step(eps_hat, t, x, generator=generator).prev_sample

    def renoise(self, x0, noise, index):
        """``x0`` noised to grid point ``index`` (its level's forward process)."""
        return self._points[index].level.noise(x0, noise)


class FlowSampler(Sampler):
    """Rectified-flow Euler (``heun=False``) or Heun on ``t_k = t_start (1 - k / N)``."""

    def __init__(self, num_inference_steps: int, heun: bool = False, t_start: float = 1.0,
                 clip_sample: bool | None = None) -> None:
        self.heun = heun
        self.clip_sample = clip_sample
        self.t = torch.linspace(t_start, 0.0, num_inference_steps + 1, dtype=torch.float64).tolist()
        self._points = [GridPoint(i, NoiseLevel.flow(t), t) for i, t in enumerate(self.t[:-1])]
        self._denoise: Denoise | None = None

    @property
    def points(self) -> list[GridPoint]:
        """``t_k = t_start (1 - k / N)`` for ``k < N``."""
        return self._points

    def _velocity(self, x: torch.Tensor, eps_hat: torch.Tensor, x0_hat: torch.Tensor,
                  level: NoiseLevel) -> torch.Tensor:
        """The flow velocity of ``(eps_hat, x0_hat)``, after clipping ``x0_hat`` when enabled."""
        if self.clip_sample and level.sigma > 0.0:
            clipped = x0_hat.clamp(-1.0, 1.0)
            eps_hat = eps_hat + (level.alpha / level.sigma) * (x0_hat - clipped)  # x = alpha x0 + sigma eps kept
            x0_hat = clipped
        return from_eps_x0(Parameterization.FLOW_VELOCITY, eps_hat, x0_hat, level.alpha, level.sigma)

    def step(self, x, eps_hat, x0_hat, point, generator):
        """Euler (or Heun) from ``t_k`` to ``t_{k+1}``."""
        dt = self.t[point.index + 1] - self.t[point.index]
        velocity = self._velocity(x, eps_hat, x0_hat, point.level)
        x_next = x + dt * velocity
        t_next = self.t[point.index + 1]
        if not self.heun or t_next <= 0.0 or self._denoise is None:
            return x_next
        next_point = GridPoint(point.index + 1, NoiseLevel.flow(t_next), t_next)
        eps2, x02 = self._denoise(x_next, next_point)
        return x + dt * 0.5 * (velocity + self._velocity(x_next, eps2, x02, next_point.level))

    def run(self, x, denoise, generator, start_index=0):
        """Integrate, keeping ``denoise`` for Heun's corrector."""
        self._denoise = denoise
        try:
            return super().run(x, denoise, generator, start_index)
        finally:
            self._denoise = None

    def renoise(self, x0, noise, index):
        """``x0`` noised to flow time ``t_index``."""
        return self._points[index].level.noise(x0, noise)

    def scale_initial(self, noise):
        """``x = t_start * eps`` (the flow level at ``t_start`` with ``x0 = 0``)."""
        return self.t[0] * noise


def make_sampler(config: SamplerConfig, scheduler: DDPMScheduler | DDIMScheduler | None = None) -> Sampler:
    """The sampler of ``config``; DDPM/DDIM use ``scheduler`` if given (its schedule), else one built from config.

    ``clip_sample`` comes from ``config`` (not from ``scheduler``); ``"auto"`` is left undecided (``None``) for the
    composer to resolve from its parents' normalisation.
    """
    clip = None if config.clip_sample == "auto" else bool(config.clip_sample)
    if config.kind in ("ddpm", "ddim"):
        if scheduler is None:
            scheduler = make_vp_scheduler(config.kind, config.num_train_timesteps, config.beta_schedule, False)
        elif (config.kind == "ddpm") != isinstance(scheduler, diffusers_schedulers()[0]):
            raise ValueError(f"SamplerConfig.kind={config.kind!r} does not match scheduler {type(scheduler).__name__}")
        return DiffusersSampler(scheduler, config.num_inference_steps, config.eta, clip)
    return FlowSampler(config.num_inference_steps, heun=config.kind == "flow_heun", t_start=config.flow_t_start,
                       clip_sample=clip)


def network_calls_per_chunk(sampler: Sampler, start_index: int = 0) -> int:
    """Parent forward passes per chunk (per parent) from ``start_index``."""
    steps = len(sampler.points) - start_index
    if isinstance(sampler, FlowSampler) and sampler.heun:
        return 2 * steps - 1 if steps else 0
    return steps


__all__ = ["SAMPLER_KINDS", "DiffusersSampler", "FlowSampler", "GridPoint", "Sampler", "SamplerConfig",
           "make_sampler", "network_calls_per_chunk"]
