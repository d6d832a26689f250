"""Noise levels, the parents' time conventions, and the alignment of different schedules on one grid.

The composer walks ONE grid of noise levels ``(alpha, sigma)`` (from a diffusers DDPM/DDIM scheduler or a flow
time grid, see :mod:`gpc_ros.compose.sampler`). Each parent was trained on its own schedule, so at every grid point
the composer asks the parent's :class:`TimeConvention` where the same signal-to-noise ratio ``alpha / sigma`` lies
in the parent's own time, and how to rescale ``x`` into the parent's convention (this module is the only place
that states it):

* VP parent (diffusers ``alphas_cumprod``): ``x_parent = x / sqrt(alpha^2 + sigma^2)``; its timestep is the one whose
  log-SNR ``log(abar / (1 - abar))`` equals ``2 log(alpha / sigma)`` (linear interpolation between the integer
  timesteps of the table, rounded to the nearest integer when the parent only accepts integer timesteps; outside
  the table the timestep is clamped to its ends and :attr:`ParentTime.clamped` is set).
* Flow parent (``x_t = (1 - t) x0 + t eps``): ``x_parent = x / (alpha + sigma)`` at ``t = sigma / (alpha + sigma)``
  (times ``time_scale`` when the network expects e.g. ``1000 t``).

Rescaling ``x`` by ``c`` moves it to noise level ``(c alpha, c sigma)``, which leaves the implied ``eps`` and ``x0``
unchanged. The parent's prediction is converted at the noise level of the time value the parent is actually given
(:attr:`ParentTime.level` = ``noise_level(value)``): when that time was rounded or clamped, this is the level the
network assumed, so its ``(eps, x0)`` pair is recovered exactly whatever its parameterisation. diffusers provides
the VP schedules themselves (``DDPMScheduler`` / ``DDIMScheduler`` with ``squaredcos_cap_v2`` as Diffusion Policy
and DP3 use); what it lacks — the SNR matching across conventions — is written here.

The noise levels themselves are written once, on :class:`NoiseLevel`: VP ``(sqrt(abar), sqrt(1 - abar))``
(:meth:`NoiseLevel.vp`), flow ``(1 - t, t)`` (:meth:`NoiseLevel.flow`), and the forward process
``x = alpha x0 + sigma eps`` (:meth:`NoiseLevel.noise`, i.e. :func:`~gpc_ros.compose.parameterization.forward`).

diffusers is imported only when a scheduler is built or checked (:func:`diffusers_schedulers`): importing it pulls
``torch._dynamo``, ``sympy`` and ``httpcore`` and took most of a node's start-up (docs/graph.md), although a flow
grid, a :class:`VPTime` from a table and everything downstream of the composer never need it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from gpc_ros.compose.parameterization import forward

if TYPE_CHECKING:  # annotations only: diffusers itself is imported on first use (diffusers_schedulers)
    from diffusers import DDIMScheduler, DDPMScheduler


_DIFFUSERS_LOCK = threading.Lock()
_SCHEDULERS: tuple[type[DDPMScheduler], type[DDIMScheduler]] | None = None


def diffusers_schedulers() -> tuple[type[DDPMScheduler], type[DDIMScheduler]]:
    """``(DDPMScheduler, DDIMScheduler)``, importing diffusers on the first call (the one place that imports it).

    Thread-safe: two threads importing diffusers at once (e.g. two hosts' announcements handled on two executor
    threads) could see its half-initialised lazy module ("cannot import name 'DDIMScheduler' from 'diffusers'").
    """
    global _SCHEDULERS
    with _DIFFUSERS_LOCK:
        if _SCHEDULERS is None:
            from diffusers import DDIMScheduler, DDPMScheduler

            _SCHEDULERS = (DDPMScheduler, DDIMScheduler)
        return _SCHEDULERS


def vp_alpha_sigma(alpha_cumprod: float | torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Variance-preserving ``(alpha, sigma) = (sqrt(abar), sqrt(1 - abar))`` (floats or tensors)."""
    return alpha_cumprod ** 0.5, (1.0 - alpha_cumprod) ** 0.5


def flow_alpha_sigma(t: float | torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Rectified-flow ``(alpha, sigma) = (1 - t, t)`` of ``x_t = (1 - t) x0 + t eps`` (floats or tensors)."""
    return 1.0 - t, t


@dataclass(frozen=True)
class NoiseLevel:
    """``x = alpha * x0 + sigma * eps``; both non-negative, not both zero."""

    alpha: float
    sigma: float

    def __post_init__(self) -> None:
        if not (self.alpha >= 0.0 and self.sigma >= 0.0 and self.alpha + self.sigma > 0.0):
            raise ValueError(f"NoiseLevel needs alpha >= 0, sigma >= 0, not both 0; got ({self.alpha}, {self.sigma})")

    @property
    def log_snr(self) -> float:
        """``2 log(alpha / sigma)`` (+inf at sigma = 0, -inf at alpha = 0)."""
        if self.sigma == 0.0:
            return math.inf
        if self.alpha == 0.0:
            return -math.inf
        return 2.0 * math.log(self.alpha / self.sigma)

    @classmethod
    def vp(cls, alpha_cumprod: float) -> NoiseLevel:
        """Variance-preserving level of a cumulative product ``abar``: ``(sqrt(abar), sqrt(1 - abar))``."""
        return cls(*vp_alpha_sigma(float(alpha_cumprod)))

    @classmethod
    def flow(cls, t: float) -> NoiseLevel:
        """Rectified-flow level at time ``t``: ``x_t = (1 - t) x0 + t eps``, i.e. ``(1 - t, t)``."""
        return cls(*flow_alpha_sigma(float(t)))

    def noise(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The forward process at this level: ``alpha x0 + sigma eps``."""
        return forward(x0, eps, self.alpha, self.sigma)


@dataclass(frozen=True)
class ParentTime:
    """Where a composer noise level lies for one parent.

    ``value``: the time handed to the parent's network; ``x_scale``: the factor ``x`` is multiplied by; ``level``:
    the noise level the parent associates with ``value`` (its predictions are converted there); ``clamped``: the
    composer's level lies outside the parent's time range and ``value`` is the range's end.
    """

    value: float
    x_scale: float
    level: NoiseLevel
    clamped: bool = False


@runtime_checkable
class TimeConvention(Protocol):
    """How a parent's network is conditioned on time."""

    def locate(self, level: NoiseLevel) -> ParentTime:
        """The parent's time for ``level``, the factor to rescale ``x`` by, and the resulting exact noise level."""
        ...

    def noise_level(self, value: float) -> NoiseLevel:
        """The noise level the parent associates with its own time ``value`` (the inverse of ``locate``)."""
        ...


class VPTime:
    """A variance-preserving parent trained on a diffusers ``alphas_cumprod`` table (timestep 0 = least noise)."""

    def __init__(self, alphas_cumprod: torch.Tensor | np.ndarray, integer_timesteps: bool = True) -> None:
        abar = np.asarray(torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu(), dtype=np.float64)
        if abar.ndim != 1 or abar.size < 2 or not np.all((abar > 0) & (abar < 1)):
            raise ValueError(f"alphas_cumprod must be a 1-D table of values in (0, 1); got shape {abar.shape}")
        log_snr = np.log(abar) - np.log1p(-abar)
        if not np.all(np.diff(log_snr) < 0):
            raise ValueError("alphas_cumprod must decrease strictly with the timestep")
        self.alphas_cumprod = abar
        self.integer_timesteps = integer_timesteps
        self._log_snr = log_snr
        self._index = np.arange(abar.size, dtype=np.float64)

    @classmethod
    def from_scheduler(cls, scheduler: DDPMScheduler | DDIMScheduler, integer_timesteps: bool = True) -> VPTime:
        """The convention of a diffusers scheduler's ``alphas_cumprod`` table."""
        return cls(scheduler.alphas_cumprod, integer_timesteps)

    def locate(self, level: NoiseLevel) -> ParentTime:
        """Timestep of equal log-SNR (rounded if ``integer_timesteps``, clamped to the table), scale, its level."""
        log_snr = level.log_snr
        clamped = not (self._log_snr[-1] <= log_snr <= self._log_snr[0])
        # np.interp needs increasing x: the table's log-SNR decreases with the timestep, so read it reversed.
        timestep = float(np.interp(log_snr, self._log_snr[::-1], self._index[::-1]))
        if self.integer_timesteps:
            timestep = float(round(timestep))
        return ParentTime(timestep, 1.0 / math.hypot(level.alpha, level.sigma), self.noise_level(timestep), clamped)

    def noise_level(self, value: float) -> NoiseLevel:
        """The table's level at ``value`` (exact at integer timesteps, log-SNR interpolated between them)."""
        if float(value).is_integer() and 0 <= value < self.alphas_cumprod.size:
            return NoiseLevel.vp(float(self.alphas_cumprod[int(value)]))
        log_snr = float(np.interp(value, self._index, self._log_snr))
        return NoiseLevel.vp(1.0 / (1.0 + math.exp(-log_snr)))


@dataclass(frozen=True)
class FlowTime:
    """A rectified-flow parent: ``x_t = (1 - t) x0 + t eps``; its network sees ``time_scale * t``."""

    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"FlowTime.time_scale must be > 0; got {self.time_scale}")

    def locate(self, level: NoiseLevel) -> ParentTime:
        """``t = sigma / (alpha + sigma)`` (times ``time_scale``), ``x`` scaled by ``1 / (alpha + sigma)``."""
        scale = 1.0 / (level.alpha + level.sigma)
        t = level.sigma * scale
        return ParentTime(t * self.time_scale, scale, NoiseLevel.flow(t))

    def noise_level(self, value: float) -> NoiseLevel:
        """``(1 - t, t)`` with ``t = value / time_scale``."""
        return NoiseLevel.flow(value / self.time_scale)


def make_vp_scheduler(
    kind: Literal["ddpm", "ddim"] = "ddim",
    num_train_timesteps: int = 100,
    beta_schedule: str = "squaredcos_cap_v2",
    clip_sample: bool = True,
    prediction_type: str = "epsilon",
) -> DDPMScheduler | DDIMScheduler:
    """The diffusers scheduler Diffusion Policy / DP3 / LeRobot train with (defaults are theirs)."""
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                  clip_sample=clip_sample, prediction_type=prediction_type)
    if kind not in ("ddpm", "ddim"):
        raise ValueError(f"kind must be 'ddpm' or 'ddim'; got {kind!r}")
    ddpm, ddim = diffusers_schedulers()
    if kind == "ddpm":
        return ddpm(variance_type="fixed_small", **common)
    return ddim(set_alpha_to_one=True, steps_offset=0, **common)


def vp_level(alphas_cumprod: torch.Tensor, timestep: int) -> NoiseLevel:
    """Noise level of an integer ``timestep`` of a diffusers ``alphas_cumprod`` table."""
    return NoiseLevel.vp(float(alphas_cumprod[int(timestep)]))
