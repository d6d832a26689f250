"""What every parent family shares: the config fields, and the module (observation encoder + 1-D U-Net head).

A :class:`ChunkPolicy` is an ``nn.Module`` that

* ``encode(observation) -> (B, cond_dim)``: validates and normalises the observation window and encodes it ONCE
  per chunk (the cached encoding serves every denoising step and every candidate weight vector);
* ``denoise(x_t (B, H, D), network_time (B,), encoding (B, cond_dim)) -> (B, H, D)``: one network evaluation in
  the normalised action space, predicting the family's parameterisation;
* ``compute_loss(batch) -> scalar`` for training (``batch`` holds the observation keys and ``"action"``
  ``(B, H, D)`` in physical units);
* ``as_parent(name, trace_head=False)``: the core's :class:`~gpc_ros.compose.parent.ParentPolicy` view of it.

Families (``diffusion``, ``dp3``, ``flow``) only choose the objective and validate their config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.compose.schedule import TimeConvention
from gpc_ros.policies.encoders.observation import STATE_KEY, ObservationConfig, ObservationEncoder, observation_tensors
from gpc_ros.policies.objectives import Objective
from gpc_ros.policies.unet1d import ConditionalUnet1D, UnetConfig

ACTION_KEY = "action"


@dataclass(frozen=True)
class ChunkPolicyConfig:
    """Fields every family has. Subclasses add their objective's fields and restrict the allowed values."""

    # --- action chunk
    action_dim: int = 3
    """``D``: e.g. 3 = end-effector position target (m, base frame ``fr3_link0``)."""
    action_horizon: int = 16
    """``H``: actions per chunk (Diffusion Policy's prediction horizon), starting at the current step."""
    # --- observation and network
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    # --- what the network predicts
    parameterization: str = "epsilon"
    # --- inference (a hint for hosts; the composer's sampler decides)
    num_inference_steps: int = 10

    allowed_parameterizations: ClassVar[tuple[str, ...]] = tuple(p.value for p in Parameterization)
    allowed_modalities: ClassVar[tuple[str, ...]] = ("image", "pointcloud")

    def __post_init__(self) -> None:
        name = type(self).__name__
        for attr in ("action_dim", "action_horizon", "num_inference_steps"):
            value = getattr(self, attr)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}.{attr} must be an int >= 1; got {value!r}")
        if self.parameterization not in self.allowed_parameterizations:
            raise ValueError(f"{name}.parameterization must be one of {self.allowed_parameterizations}; "
                             f"got {self.parameterization!r}")
        if not isinstance(self.observation, ObservationConfig):
            raise ValueError(f"{name}.observation must be an ObservationConfig; got {type(self.observation).__name__}")
        if self.observation.modality not in self.allowed_modalities:
            raise ValueError(f"{name}.observation.modality must be one of {self.allowed_modalities}; "
                             f"got {self.observation.modality!r}")
        if not isinstance(self.unet, UnetConfig):
            raise ValueError(f"{name}.unet must be a UnetConfig; got {type(self.unet).__name__}")
        try:
            self.unet.check_horizon(self.action_horizon)
        except ValueError as exc:
            raise ValueError(f"{name}.{exc}") from None


def check_normalization(what: str, normalization: ActionNormalization, dim: int) -> None:
    """Check that ``normalization`` fits the ``what`` (``"action"`` or ``"state"``) vectors of ``dim`` dims.

    The identity normalisation (``dim`` None) fits any width.

    Raises:
        TypeError: ``normalization`` is not an :class:`ActionNormalization`.
        ValueError: it was fitted on vectors of another width than ``dim``.
    """
    if not isinstance(normalization, ActionNormalization):
        raise TypeError(f"{what} normalization must be an ActionNormalization; got {type(normalization).__name__}")
    if normalization.dim is not None and normalization.dim != dim:
        raise ValueError(f"{what} normalization has {normalization.dim} dims; the config says {what}_dim = {dim}")


class ChunkPolicy(nn.Module):
    """Observation encoder + FiLM 1-D U-Net + objective + stored normalisation (see module docstring)."""

    policy_type: ClassVar[str] = ""
    config_class: ClassVar[type[ChunkPolicyConfig]] = ChunkPolicyConfig

    def __init__(self, config: ChunkPolicyConfig, action_normalization: ActionNormalization | None = None,
                 state_normalization: ActionNormalization | None = None) -> None:
        super().__init__()
        self.config = config
        self.action_normalization = action_normalization or ActionNormalization()
        self.state_normalization = state_normalization or ActionNormalization()
        check_normalization("action", self.action_normalization, config.action_dim)
        check_normalization("state", self.state_normalization, config.observation.state_dim)
        self.objective: Objective = self.make_objective(config)
        self.observation_encoder = ObservationEncoder(config.observation)
        self.unet = ConditionalUnet1D(config.action_dim, self.observation_encoder.output_dim, config.unet)

    # ------------------------------------------------------------------ family hook
    @classmethod
    def make_objective(cls, config: ChunkPolicyConfig) -> Objective:
        """The family's training objective and noise schedule for ``config``; every family overrides this."""
        raise NotImplementedError

    # ------------------------------------------------------------------ properties of the contract
    @property
    def parameterization(self) -> Parameterization:
        """What :meth:`denoise` predicts (epsilon, sample, v_prediction or flow velocity)."""
        return self.objective.parameterization

    @property
    def time_convention(self) -> TimeConvention:
        """How the composer's time maps to this network's ``network_time`` input (VP timestep or flow time)."""
        return self.objective.time_convention

    @property
    def expected_keys(self) -> tuple[str, ...]:
        """The observation keys :meth:`encode` requires (state plus image or point cloud)."""
        return self.config.observation.expected_keys

    @property
    def encoding_dim(self) -> int:
        """Width of the encoding :meth:`encode` returns, ``(B, encoding_dim)``."""
        return self.observation_encoder.output_dim

    # ------------------------------------------------------------------ forward
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, observation: Mapping[str, Any]) -> torch.Tensor:
        """Observation window (see :mod:`gpc_ros.policies.encoders.observation`) -> ``(B, encoding_dim)``."""
        return self.observation_encoder(self.encoder_inputs(observation))

    def encoder_inputs(self, observation: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """What :meth:`encode` gives ``observation_encoder``: the window's tensors on the device, state normalised."""
        tensors = observation_tensors(observation, self.config.observation)
        device = self._device()
        tensors = {k: v.to(device) for k, v in tensors.items()}
        if STATE_KEY in tensors:
            tensors[STATE_KEY] = self.state_normalization.normalize(tensors[STATE_KEY])
        return tensors

    def denoise(self, x_t: torch.Tensor, network_time: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        """``(B, H, D)`` normalised noisy chunk, ``(B,)`` network time, ``(B, encoding_dim)`` -> ``(B, H, D)``."""
        return self.unet(x_t, network_time, encoding)

    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the prediction against the objective's target (one noise draw per sample)."""
        actions = torch.as_tensor(batch[ACTION_KEY], dtype=torch.float32)
        want = (self.config.action_horizon, self.config.action_dim)
        if actions.dim() != 3 or tuple(actions.shape[1:]) != want:
            raise ValueError(f"batch[{ACTION_KEY!r}] must be (B, {want[0]}, {want[1]}); got {tuple(actions.shape)}")
        # noise and times are drawn on the CPU (a CPU generator makes runs reproducible on any device)
        x_t, network_time, target = self.objective.training_example(self.action_normalization.normalize(actions),
                                                                    generator)
        encoding = self.encode(batch)
        device = self._device()
        prediction = self.denoise(x_t.to(device), network_time.to(device), encoding)
        return torch.nn.functional.mse_loss(prediction, target.to(device))

    def as_parent(self, name: str | None = None, trace_head: bool = False):
        """The core's parent-contract view of this policy (puts the module in eval mode).

        ``trace_head``: run the U-Net head as a frozen TorchScript trace per input shape
        (:class:`~gpc_ros.policies.traced.TracedHead`): the bit-identical prediction in about half the time, and
        without holding the GIL, so parents in threads (``ComposerConfig.parallel_parents``) overlap.

        Raises:
            TypeError: ``trace_head`` is not a bool.
        """
        from gpc_ros.policies.adapter import ModuleParent, SplitEncoder
        from gpc_ros.policies.traced import TracedHead

        if not isinstance(trace_head, bool):
            raise TypeError(f"as_parent: trace_head must be True or False; got {trace_head!r}")
        self.eval()
        denoiser = TracedHead(self.unet) if trace_head else self.denoise
        return ModuleParent(
            name=name or self.policy_type, denoiser=denoiser, parameterization=self.parameterization,
            time_convention=self.time_convention, action_horizon=self.config.action_horizon,
            action_dim=self.config.action_dim, normalization=self.action_normalization,
            encoder=SplitEncoder(self.encoder_inputs, self.observation_encoder),
            device=self._device())
