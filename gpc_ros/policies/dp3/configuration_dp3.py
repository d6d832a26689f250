"""Configuration of the DP3-style point-cloud policy (Ze et al. 2024): sparse cloud + state, sample or epsilon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from gpc_ros.policies.diffusion.configuration_diffusion import VPScheduleConfig
from gpc_ros.policies.encoders.observation import ObservationConfig


@dataclass(frozen=True)
class DP3Config(VPScheduleConfig):
    """DP3 config: a PointNet-like encoder on 512-1024 points and a VP-diffusion head.

    It predicts the clean chunk (``sample``, DP3's choice), ``epsilon`` or ``v_prediction`` — configurable, so the
    composer is exercised on all of them.
    """

    observation: ObservationConfig = field(default_factory=lambda: ObservationConfig(modality="pointcloud"))
    parameterization: str = "sample"

    allowed_parameterizations: ClassVar[tuple[str, ...]] = ("sample", "epsilon", "v_prediction")
    allowed_modalities: ClassVar[tuple[str, ...]] = ("pointcloud",)
