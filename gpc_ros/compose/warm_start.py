"""Warm start in the spirit of RTI-DP: begin the next chunk from the previous composed chunk.

After ``executed_steps`` actions of the previous (normalised) chunk ``(B, H, D)`` have been executed, its remainder
is shifted to the front and the tail padded (``repeat_last``: the last action held; ``zeros``: the normalised
zero action). The shifted chunk is re-noised to grid point ``k0 = N - ceil(remaining_fraction * N)`` of the
composer's ``N``-point grid (``x_{k0} = alpha_{k0} x0 + sigma_{k0} eps``, fresh ``eps``) and only the remaining
``N - k0`` steps run, i.e. ``remaining_fraction`` of the network calls of a full chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
