"""Warm start (RTI-DP / SDEdit-style partial denoising): begin the next chunk from a known plan, not pure noise.

After ``executed_steps`` actions of the previous (normalised) chunk ``(B, H, D)`` have been executed, its remainder
is shifted to the front and the tail padded (``repeat_last``: the last action held; ``zeros``: the normalised
zero action). The shifted chunk is re-noised to grid point ``k0 = N - ceil(remaining_fraction * N)`` of the
composer's ``N``-point grid (``x_{k0} = alpha_{k0} x0 + sigma_{k0} eps``, fresh ``eps``) and only the remaining
``N - k0`` steps run, i.e. ``remaining_fraction`` of the network calls of a full chunk.

The same start from the robot driver's **running plan** (:class:`RunningPlan`, what the arm is executing, on the
driver's clock): :func:`warm_start_from_plan` samples the plan at the new chunk's own action times
``tau_i = start + i dt`` (linear interpolation between the plan's steps, exactly like the driver's tracking; before
the plan's first step its first action; after its last step ``repeat_last`` holds the last action — what the
driver does — and ``zeros`` puts the normalised zero action), normalises it with the parents' shared action
normalisation, and hands it over as a :class:`WarmStart` with ``executed_steps = 0``::

    x0_i    = normalize(a_plan(tau_i)),                      i = 0 .. H-1
    x_{k0}  = alpha_{k0} x0 + sigma_{k0} eps,   eps ~ N(0, I) drawn from the chunk's seed
    k0      = N - ceil(remaining_fraction * N);  steps k0 .. N-1 of the grid run as usual

(VP grids: ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``; flow grids: ``alpha = 1 - t``, ``sigma = t``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

PAD_MODES = ("repeat_last", "zeros")


@dataclass(frozen=True)
class WarmStartConfig:
    """How a warm-started chunk is prepared."""

    remaining_fraction: float = 0.5
    """Fraction of the grid still run (0 < f <= 1; 1 = a full re-noise to pure noise, no speed-up)."""
    pad: Literal["repeat_last", "zeros"] = "repeat_last"
    """How the freed tail of the shifted chunk is filled."""

    def __post_init__(self) -> None:
        if not 0.0 < self.remaining_fraction <= 1.0:
            raise ValueError(f"WarmStartConfig.remaining_fraction must be in (0, 1]; got {self.remaining_fraction}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"WarmStartConfig.pad must be one of {PAD_MODES}; got {self.pad!r}")


@dataclass(frozen=True)
class WarmStart:
    """The previous composed chunk (normalised, ``(B, H, D)``) and how many of its actions were executed."""

    previous_normalized: torch.Tensor
    executed_steps: int

    def __post_init__(self) -> None:
        if self.previous_normalized.dim() != 3:
            raise ValueError(
                f"WarmStart.previous_normalized must be (B, H, D); got shape {tuple(self.previous_normalized.shape)}")
        if not 0 <= self.executed_steps < self.previous_normalized.shape[1]:
            raise ValueError(
                f"WarmStart.executed_steps must be in [0, H={self.previous_normalized.shape[1]}); "
                f"got {self.executed_steps}")


def shifted_chunk(previous: torch.Tensor, executed_steps: int,
                  pad: Literal["repeat_last", "zeros"] = "repeat_last") -> torch.Tensor:
    """``(B, H, D)`` chunk without its first ``executed_steps`` actions, tail padded back to ``H``."""
    if executed_steps == 0:
        return previous
    rest = previous[:, executed_steps:]
    if pad == "repeat_last":
        tail = rest[:, -1:].expand(-1, executed_steps, -1)
    else:
        tail = torch.zeros_like(previous[:, :executed_steps])
    return torch.cat([rest, tail], dim=1)


def start_index(num_points: int, remaining_fraction: float) -> int:
    """First grid index to run so that ``ceil(remaining_fraction * num_points)`` steps remain (at least one)."""
    remaining = max(1, min(num_points, math.ceil(remaining_fraction * num_points - 1e-9)))
    return num_points - remaining


@dataclass(frozen=True)
class RunningPlan:
    """The actions a robot is executing: ``actions[i]`` (physical units) is due at ``start_time_s + i * dt_s``.

    Times are on the clock the composer names observation times on (ROS time in the graph). ``actions`` is
    ``(P, D_plan)``; the first ``D`` columns are the composer's action dimensions (Cartesian TCP position, then the
    gripper width when the plan carries it).
    """

    start_time_s: float
    dt_s: float
    actions: np.ndarray

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(f"RunningPlan.actions must be (P >= 1, D >= 1); got shape {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("RunningPlan.actions must be finite")
        if not (math.isfinite(self.start_time_s) and math.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f"RunningPlan needs a finite start_time_s and dt_s > 0; got {self.start_time_s}, "
                             f"{self.dt_s}")
        actions.setflags(write=False)
        object.__setattr__(self, "actions", actions)

    @property
    def end_time_s(self) -> float:
        """When the plan's last action is due (s)."""
        return self.start_time_s + self.dt_s * (self.actions.shape[0] - 1)

    def remaining_s(self, now_s: float) -> float:
        """How long the plan still runs after ``now_s`` (s; negative once it ended)."""
        return self.end_time_s - now_s

    def sample(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan at ``times_s`` ``(H,)``: ``(H, D_plan)`` actions and ``(H,)`` True where ``t <= end_time_s``.

        Linear interpolation between steps; before the first step the first action; after the last the last one.
        """
        s = (np.asarray(times_s, dtype=np.float64) - self.start_time_s) / self.dt_s
        last = self.actions.shape[0] - 1
        s_clamped = np.clip(s, 0.0, float(last))
        i = np.minimum(np.floor(s_clamped).astype(np.int64), max(last - 1, 0))
        frac = (s_clamped - i)[:, None] if last > 0 else np.zeros((len(s), 1))
        nxt = np.minimum(i + 1, last)
        values = (1.0 - frac) * self.actions[i] + frac * self.actions[nxt]
        return values, s <= last + 1e-9


def warm_start_from_plan(plan: RunningPlan, start_time_s: float, dt_s: float, horizon: int, action_dim: int,
                         normalization, pad: Literal["repeat_last", "zeros"] = "repeat_last",
                         dtype: torch.dtype = torch.float32) -> WarmStart:
    """A :class:`WarmStart` (``executed_steps = 0``) holding ``plan`` sampled at the new chunk's action times.

    Args:
        plan: The driver's running plan.
        start_time_s: When the new chunk's first action is due (s, the plan's clock).
        dt_s: Time between the new chunk's actions (s).
        horizon: ``H`` of the new chunk (the composer's longest parent horizon).
        action_dim: ``D`` of the new chunk; the plan's first ``D`` columns are used.
        normalization: The parents' shared :class:`~gpc_ros.compose.parent.ActionNormalization`.
        pad: After the plan's end: ``repeat_last`` (hold its last action) or ``zeros`` (normalised zero action).
        dtype: Dtype of the returned chunk.

    Raises:
        ValueError: The plan has fewer action dimensions than ``action_dim``, or bad sizes.
    """
    if not (isinstance(horizon, int) and horizon >= 1 and isinstance(action_dim, int) and action_dim >= 1):
        raise ValueError(f"warm_start_from_plan needs horizon >= 1 and action_dim >= 1; got {horizon}, {action_dim}")
    if plan.actions.shape[1] < action_dim:
        raise ValueError(f"the running plan has {plan.actions.shape[1]} action dimension(s), the chunk needs "
                         f"{action_dim} (a plan without the gripper width cannot start a chunk that has one)")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}; got {pad!r}")
    times = start_time_s + dt_s * np.arange(horizon, dtype=np.float64)
    values, covered = plan.sample(times)
    x0 = normalization.normalize(torch.from_numpy(values[:, :action_dim].copy())).to(dtype)
    if pad == "zeros":
        x0[torch.from_numpy(~covered)] = 0.0
    return WarmStart(x0.unsqueeze(0), executed_steps=0)
