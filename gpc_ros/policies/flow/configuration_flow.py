"""Configuration of the flow-matching policy: rectified-flow velocity, image or point-cloud encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from gpc_ros.policies.chunk_policy import ChunkPolicyConfig

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class FlowConfig(ChunkPolicyConfig):
    """Rectified flow ``x_t = (1 - t) x0 + t eps`` (noise at ``t = 1``), predicting the velocity ``eps - x0``."""

    parameterization: str = "flow_velocity"
    # --- flow time
    time_scale: float = 100.0
    """The network sees ``time_scale * t`` (100 puts it on the same range as the 100-step VP parents)."""
    time_sampling: str = "uniform"
    """Training distribution of ``t``: ``uniform`` | ``logit_normal`` (SD3 / pi0 style, more mass mid-way)."""

    allowed_parameterizations: ClassVar[tuple[str, ...]] = ("flow_velocity",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.time_scale, (int, float)) and math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"FlowConfig.time_scale must be a finite number > 0; got {self.time_scale!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"FlowConfig.time_sampling must be one of {TIME_SAMPLINGS}; got {self.time_sampling!r}")
