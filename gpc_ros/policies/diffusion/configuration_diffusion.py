"""Configuration of the RGB Diffusion Policy (Chi et al. 2023): images + state, epsilon prediction, DDPM/DDIM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from gpc_ros.policies.chunk_policy import ChunkPolicyConfig
from gpc_ros.policies.encoders.observation import ObservationConfig

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class VPScheduleConfig(ChunkPolicyConfig):
    """A :class:`ChunkPolicyConfig` trained with a diffusers DDPM schedule (Diffusion Policy and DP3)."""

    # --- noise schedule (diffusers DDPMScheduler for training; the composer samples with DDIM on it)
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] (actions are min-max normalised to [-1, 1])."""

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not (isinstance(self.num_train_timesteps, int) and self.num_train_timesteps >= 2):
            raise ValueError(f"{name}.num_train_timesteps must be an int >= 2; got {self.num_train_timesteps!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"{name}.beta_schedule must be one of {BETA_SCHEDULES}; got {self.beta_schedule!r}")
        if not isinstance(self.clip_sample, bool):
            raise ValueError(f"{name}.clip_sample must be a bool; got {self.clip_sample!r}")
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(f"{name}.num_inference_steps must be <= num_train_timesteps "
                             f"({self.num_train_timesteps}); got {self.num_inference_steps}")


@dataclass(frozen=True)
class DiffusionConfig(VPScheduleConfig):
    """RGB Diffusion Policy: observation horizon 2, prediction horizon 16, epsilon prediction."""

    observation: ObservationConfig = field(default_factory=lambda: ObservationConfig(modality="image"))
    parameterization: str = "epsilon"

    allowed_parameterizations: ClassVar[tuple[str, ...]] = ("epsilon",)
    allowed_modalities: ClassVar[tuple[str, ...]] = ("image",)
