"""Small convolutional image encoder with a spatial-softmax keypoint head (Diffusion Policy / robomimic style).

No torchvision here (it does not import beside torch 2.13), so the network is written out: ``n_conv`` 3x3 conv
blocks (GroupNorm + Mish, the first two with stride 2), then a 1x1 conv to ``num_keypoints`` feature maps, a
spatial softmax that turns each map into its expected ``(x, y)`` image coordinate in [-1, 1], and a linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Shape of the image encoder (images at most 96x96 so it trains on CPU)."""

    image_size: int = 96
    """Square input side in pixels (``H = W``), 16..96."""
    channels: int = 3
    """Input channels (3 = RGB)."""
    width: int = 16
    """Channels of every conv layer (the knob that trades accuracy for CPU time)."""
    num_conv: int = 3
    """Conv blocks; the first two halve the resolution."""
    num_keypoints: int = 32
    """Spatial-softmax keypoints (each gives an ``(x, y)`` pair)."""
    feature_dim: int = 64
    """Output feature size per frame."""

    def __post_init__(self) -> None:
        if not (isinstance(self.image_size, int) and 16 <= self.image_size <= 96):
            raise ValueError(f"ImageEncoderConfig.image_size must be an int in [16, 96]; got {self.image_size!r}")
        for name in ("channels", "width", "num_conv", "num_keypoints", "feature_dim"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ImageEncoderConfig.{name} must be an int >= 1; got {value!r}")
        if self.width % 8:
            raise ValueError(f"ImageEncoderConfig.width must be a multiple of 8 (GroupNorm groups); got {self.width}")


class SpatialSoftmax(nn.Module):
    """``(B, K, H, W)`` feature maps -> ``(B, 2K)`` expected keypoint coordinates ``(x, y)`` in [-1, 1]."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax each ``(H, W)`` map into a distribution and return its expected ``(x, y)``: ``(B, 2K)``."""
        b, k, h, w = features.shape
        attention = torch.softmax(features.reshape(b, k, h * w), dim=-1)  # (B, K, HW)
        return (attention @ self.grid).reshape(b, 2 * k)


class ImageEncoder(nn.Module):
    """``(N, C, H, W)`` float images in [0, 1] -> ``(N, feature_dim)``."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch, side = config.channels, config.image_size
        for i in range(config.num_conv):
            stride = 2 if i < 2 else 1
            layers += [nn.Conv2d(in_ch, config.width, 3, stride=stride, padding=1),
                       nn.GroupNorm(config.width // 8, config.width), nn.Mish()]
            in_ch = config.width
            side = (side + 2 - 3) // stride + 1
        self.backbone = nn.Sequential(*layers)
        self.keypoints = nn.Conv2d(config.width, config.num_keypoints, 1)
        self.spatial_softmax = SpatialSoftmax(side, side)
        self.out = nn.Linear(2 * config.num_keypoints, config.feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode ``(N, C, H, W)`` float images in [0, 1] into ``(N, feature_dim)`` features."""
        # Centre to [-1, 1]: the conv stack sees zero-mean inputs.
        features = self.keypoints(self.backbone(images * 2.0 - 1.0))
        return self.out(self.spatial_softmax(features))
