"""PointNet-like point-cloud encoder in the DP3 style: per-point MLP, max-pool over points, LayerNorm.

DP3 ("3D Diffusion Policy", Ze et al. 2024) shows that a small MLP with LayerNorm and a max-pool over a sparse cloud
(512-1024 points, no colour) is enough and trains fast; this is that encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PointCloudEncoderConfig:
    """Shape of the point-cloud encoder."""

    num_points: int = 512
    """Points per cloud ``N`` (the perception pipeline's farthest-point-sampling size), 64..4096."""
    point_dim: int = 3
    """Coordinates per point: 3 = ``xyz`` (m, base frame ``fr3_link0``); 6 adds ``rgb`` in [0, 1]."""
    hidden_dims: tuple[int, ...] = (32, 64, 128)
    """Per-point MLP widths (each layer Linear + LayerNorm + ReLU); DP3 uses (64, 128, 256) on a GPU."""
    feature_dim: int = 64
    """Output feature size per cloud."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_dims", tuple(self.hidden_dims))
        if not (isinstance(self.num_points, int) and 64 <= self.num_points <= 4096):
            raise ValueError(f"PointCloudEncoderConfig.num_points must be an int in [64, 4096]; "
                             f"got {self.num_points!r}")
        if self.point_dim not in (3, 6):
            raise ValueError(f"PointCloudEncoderConfig.point_dim must be 3 or 6; got {self.point_dim!r}")
        if not self.hidden_dims or not all(isinstance(d, int) and d >= 1 for d in self.hidden_dims):
            raise ValueError(f"PointCloudEncoderConfig.hidden_dims must be non-empty ints >= 1; got {self.hidden_dims}")
        if not (isinstance(self.feature_dim, int) and self.feature_dim >= 1):
            raise ValueError(f"PointCloudEncoderConfig.feature_dim must be an int >= 1; got {self.feature_dim!r}")


class PointCloudEncoder(nn.Module):
    """``(N_clouds, P, point_dim)`` -> ``(N_clouds, feature_dim)``; invariant to the order of the points."""

    def __init__(self, config: PointCloudEncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_dim = config.point_dim
        for width in config.hidden_dims:
            layers += [nn.Linear(in_dim, width), nn.LayerNorm(width), nn.ReLU()]
            in_dim = width
        self.point_mlp = nn.Sequential(*layers)
        self.projection = nn.Sequential(nn.Linear(in_dim, config.feature_dim), nn.LayerNorm(config.feature_dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Encode ``(N_clouds, P, point_dim)`` clouds (xyz in m) into ``(N_clouds, feature_dim)`` features."""
        per_point = self.point_mlp(points)  # (N, P, C)
        return self.projection(per_point.max(dim=1).values)
