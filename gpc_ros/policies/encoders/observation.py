"""The observation a parent is conditioned on: keys, shapes, validation, and the encoder of a whole window.

An observation is a mapping from LeRobot-style keys to arrays (numpy or torch) over the last ``obs_horizon`` frames,
oldest first, batch-first (a missing batch axis is added):

=========================  =====================================  ============================================
key                        shape                                  meaning
=========================  =====================================  ============================================
``observation.image``      ``(B, T_obs, S, S, 3)`` uint8 or        RGB image (``S = image_size``), values
                           float in [0, 1]                        0..255 (uint8) or 0..1 (float)
``observation.pointcloud`` ``(B, T_obs, N, 3 or 6)`` float        points ``xyz`` in m, base frame ``fr3_link0``
                                                                  (+ ``rgb`` in [0, 1])
``observation.state``      ``(B, T_obs, state_dim)`` float        robot state in physical units (e.g. m)
=========================  =====================================  ============================================

Only the keys of the configured modality (plus the state) are read; ``expected_keys`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from gpc_ros.policies.encoders.image import ImageEncoder, ImageEncoderConfig
from gpc_ros.policies.encoders.pointcloud import PointCloudEncoder, PointCloudEncoderConfig
from gpc_ros.policies.encoders.state import StateEncoder, StateEncoderConfig

IMAGE_KEY = "observation.image"
POINTCLOUD_KEY = "observation.pointcloud"
STATE_KEY = "observation.state"
MODALITIES = ("image", "pointcloud")


@dataclass(frozen=True)
class ObservationConfig:
    """What a parent observes and how each frame is encoded."""

    modality: Literal["image", "pointcloud"] = "image"
    """``image`` (Diffusion Policy) | ``pointcloud`` (DP3)."""
    obs_horizon: int = 2
    """Frames per observation window ``T_obs`` (oldest first)."""
    state_dim: int = 3
    """Robot-state dimension; 0 = the parent sees no state."""
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    """Used when ``modality == 'image'``."""
    pointcloud: PointCloudEncoderConfig = field(default_factory=PointCloudEncoderConfig)
    """Used when ``modality == 'pointcloud'``."""
    state: StateEncoderConfig = field(default_factory=StateEncoderConfig)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"ObservationConfig.modality must be one of {MODALITIES}; got {self.modality!r}")
        if not (isinstance(self.obs_horizon, int) and self.obs_horizon >= 1):
            raise ValueError(f"ObservationConfig.obs_horizon must be an int >= 1; got {self.obs_horizon!r}")
        if not (isinstance(self.state_dim, int) and self.state_dim >= 0):
            raise ValueError(f"ObservationConfig.state_dim must be an int >= 0; got {self.state_dim!r}")

    @property
    def frame_key(self) -> str:
        """The observation key of the configured modality (``observation.image`` or ``observation.pointcloud``)."""
        return IMAGE_KEY if self.modality == "image" else POINTCLOUD_KEY

    @property
    def expected_keys(self) -> tuple[str, ...]:
        """Observation keys this parent reads."""
        return (self.frame_key, STATE_KEY) if self.state_dim else (self.frame_key,)

    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame of the modality (without batch and time axes)."""
        if self.modality == "image":
            return (self.image.image_size, self.image.image_size, self.image.channels)
        return (self.pointcloud.num_points, self.pointcloud.point_dim)


def random_observation(config: ObservationConfig, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A random observation window of the keys, shapes and dtypes ``config`` expects (for smoke tests and benches).

    Returns:
        ``observation.state`` ``(B, T, state_dim)`` float32 and ``observation.image`` ``(B, T, S, S, 3)`` uint8 or
        ``observation.pointcloud`` ``(B, T, N, 3)`` float32 (m), with ``B = batch`` and ``T = obs_horizon``.
    """
    rng = np.random.default_rng(seed)
    shape = (batch, config.obs_horizon)
    out = {"observation.state": rng.uniform(0.2, 0.6, (*shape, config.state_dim)).astype(np.float32)}
    if config.modality == "image":
        s = config.image.image_size
        out["observation.image"] = rng.integers(0, 256, (*shape, s, s, 3), dtype=np.uint8)
    else:
        out["observation.pointcloud"] = rng.uniform(
            -0.3, 0.6, (*shape, config.pointcloud.num_points, 3)).astype(np.float32)
    return out


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.from_numpy(np.ascontiguousarray(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"observation[{key!r}] must be a numpy array or torch tensor; got {type(value).__name__}") \
            from exc


def observation_tensors(observation: Mapping[str, Any], config: ObservationConfig) -> dict[str, torch.Tensor]:
    """Validated, batch-first float32 tensors ``{key: (B, T_obs, ...)}`` of the keys ``config`` reads.

    Images become ``(B, T_obs, C, S, S)`` in [0, 1]. A parent with ``point_dim`` 3 accepts an ``(.., N, 6)`` xyzrgb
    cloud and reads its first three columns (the cell's and pointcloud_node's layout: xyz, then rgb). Raises
    ``KeyError`` for a missing key and ``ValueError`` for a wrong shape or non-finite values, naming the key, the
    expected and the received shape.
    """
    if not isinstance(observation, Mapping):
        raise TypeError(f"observation must be a mapping with keys {config.expected_keys}; "
                        f"got {type(observation).__name__}")
    missing = [k for k in config.expected_keys if k not in observation]
    if missing:
        raise KeyError(f"observation lacks {missing}; this parent expects keys {list(config.expected_keys)} "
                       f"(got {sorted(observation)})")
    shapes = {config.frame_key: config.frame_shape()}
    if config.state_dim:
        shapes[STATE_KEY] = (config.state_dim,)
    out: dict[str, torch.Tensor] = {}
    batch_sizes = set()
    for key, frame in shapes.items():
        value = _as_tensor(key, observation[key])
        if key == POINTCLOUD_KEY and frame[-1] == 3 and value.dim() >= 2 and value.shape[-1] == 6:
            value = value[..., :3]  # an xyz parent reads the xyz columns of an xyzrgb cloud
        want = (config.obs_horizon, *frame)
        if tuple(value.shape) == want:
            value = value.unsqueeze(0)
        if value.dim() != len(want) + 1 or tuple(value.shape[1:]) != want:
            raise ValueError(f"observation[{key!r}] must have shape (B, {', '.join(map(str, want))}) "
                             f"(batch, T_obs, ...); got {tuple(value.shape)}")
        if key == IMAGE_KEY:
            value = (value.float() / 255.0 if value.dtype == torch.uint8 else value.float()).permute(0, 1, 4, 2, 3)
        else:
            value = value.float()
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"observation[{key!r}] contains NaN or inf")
        batch_sizes.add(int(value.shape[0]))
        out[key] = value
    if len(batch_sizes) != 1:
        raise ValueError(f"observation keys disagree on the batch size: "
                         f"{ {k: int(v.shape[0]) for k, v in out.items()} }")
    return out


class ObservationEncoder(nn.Module):
    """``{key: (B, T_obs, ...)}`` (state already normalised) -> ``(B, output_dim)`` global conditioning.

    Every frame is encoded by the same network; the per-frame features (and state features) of the window are
    concatenated, as Diffusion Policy does.
    """

    def __init__(self, config: ObservationConfig) -> None:
        super().__init__()
        self.config = config
        if config.modality == "image":
            self.frame_encoder: nn.Module = ImageEncoder(config.image)
            frame_dim = config.image.feature_dim
        else:
            self.frame_encoder = PointCloudEncoder(config.pointcloud)
            frame_dim = config.pointcloud.feature_dim
        self.state_encoder = StateEncoder(config.state_dim, config.state) if config.state_dim else None
        state_dim = self.state_encoder.output_dim if self.state_encoder is not None else 0
        self.output_dim = config.obs_horizon * (frame_dim + state_dim)

    def forward(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encode a window from :func:`observation_tensors` (state normalised) into ``(B, output_dim)``.

        Each of the ``T_obs`` frames (and states) is encoded separately; the features are concatenated in time
        order, oldest first.
        """
        frames = tensors[self.config.frame_key]
        b, t = frames.shape[:2]
        features = [self.frame_encoder(frames.flatten(0, 1)).reshape(b, t, -1)]
        if self.state_encoder is not None:
            features.append(self.state_encoder(tensors[STATE_KEY].flatten(0, 1)).reshape(b, t, -1))
        return torch.cat(features, dim=-1).reshape(b, -1)
