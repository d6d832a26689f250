"""State MLP: the normalised robot state (e.g. end-effector position, m) -> a feature vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StateEncoderConfig:
    """Shape of the state MLP (``hidden_dim = 0`` passes the normalised state through unchanged)."""

    hidden_dim: int = 64
    feature_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "feature_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"StateEncoderConfig.{name} must be an int >= 0; got {value!r}")


class StateEncoder(nn.Module):
    """``(N, state_dim)`` normalised state -> ``(N, output_dim)``."""

    def __init__(self, state_dim: int, config: StateEncoderConfig) -> None:
        super().__init__()
        if config.hidden_dim == 0:
            self.mlp: nn.Module = nn.Identity()
            self.output_dim = state_dim
        else:
            self.mlp = nn.Sequential(nn.Linear(state_dim, config.hidden_dim), nn.Mish(),
                                     nn.Linear(config.hidden_dim, config.feature_dim))
            self.output_dim = config.feature_dim

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Map the ``(N, state_dim)`` normalised state to ``(N, output_dim)`` features."""
        return self.mlp(state)
