"""ConditionalUnet1D: a FiLM-conditioned 1-D U-Net over the action chunk (Diffusion Policy's head, also DP3's).

The chunk ``(B, H, D)`` is treated as a ``D``-channel sequence of length ``H``. Every residual block is modulated by
FiLM (per-channel scale and bias) from the concatenation of a sinusoidal embedding of the network time and the
global observation conditioning. With ``down_dims`` of length ``L`` the horizon is halved ``L - 1`` times, so ``H``
must be divisible by ``2 ** (L - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UnetConfig:
    """Shape of the 1-D U-Net head."""

    down_dims: tuple[int, ...] = (32, 64, 128)
    """Channels per resolution level (Diffusion Policy ships (256, 512, 1024); this size trains on CPU)."""
    kernel_size: int = 5
    n_groups: int = 8
    """GroupNorm groups; every entry of ``down_dims`` must be divisible by it."""
    time_embed_dim: int = 64
    """Sinusoidal time-embedding size."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "down_dims", tuple(self.down_dims))
        if not self.down_dims or not all(isinstance(d, int) and d >= 1 for d in self.down_dims):
            raise ValueError(f"UnetConfig.down_dims must be non-empty ints >= 1; got {self.down_dims}")
        if not (isinstance(self.n_groups, int) and self.n_groups >= 1) or any(d % self.n_groups
                                                                              for d in self.down_dims):
            raise ValueError(f"UnetConfig.n_groups must divide every down_dims entry {self.down_dims}; "
                             f"got {self.n_groups!r}")
        if not (isinstance(self.kernel_size, int) and self.kernel_size % 2 == 1):
            raise ValueError(f"UnetConfig.kernel_size must be an odd int; got {self.kernel_size!r}")
        if not (isinstance(self.time_embed_dim, int) and self.time_embed_dim >= 2 and self.time_embed_dim % 2 == 0):
            raise ValueError(f"UnetConfig.time_embed_dim must be an even int >= 2; got {self.time_embed_dim!r}")

    def check_horizon(self, horizon: int) -> None:
        """Check that an action chunk of ``horizon`` steps survives the ``len(down_dims) - 1`` halvings.

        Raises:
            ValueError: ``horizon`` is not divisible by ``2 ** (len(down_dims) - 1)``.
        """
        factor = 2 ** (len(self.down_dims) - 1)
        if horizon % factor:
            raise ValueError(f"action_horizon must be divisible by 2**(len(down_dims)-1) = {factor} for "
                             f"down_dims {self.down_dims}; got {horizon}")


class SinusoidalTimeEmbedding(nn.Module):
    """``(B,)`` float times -> ``(B, dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed ``(B,)`` times as ``[sin(t f_i), cos(t f_i)]``, ``f_i`` geometric from 1 to 1e-4: ``(B, dim)``."""
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1
                                                                                                           or 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__(nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(n_groups, out_ch), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the first one's output is scaled and shifted per channel from the conditioning."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.residual = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_ch, H)`` to ``(B, out_ch, H)``, modulated by the ``(B, cond_dim)`` conditioning."""
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        out = self.block1(x) * scale + bias
        return self.block2(out) + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """``(B, H, D)`` noisy chunk, ``(B,)`` network time, ``(B, cond_dim)`` conditioning -> ``(B, H, D)``."""

    def __init__(self, action_dim: int, cond_dim: int, config: UnetConfig) -> None:
        super().__init__()
        self.config = config
        k, g = config.kernel_size, config.n_groups
        self.time_embedding = nn.Sequential(
            SinusoidalTimeEmbedding(config.time_embed_dim), nn.Linear(config.time_embed_dim, 4 * config.time_embed_dim),
            nn.Mish(), nn.Linear(4 * config.time_embed_dim, config.time_embed_dim))
        film_dim = config.time_embed_dim + cond_dim
        dims = [action_dim, *config.down_dims]
        levels = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(nn.ModuleList([
                FiLMResidualBlock(d_in, d_out, film_dim, k, g), FiLMResidualBlock(d_out, d_out, film_dim, k, g),
                nn.Identity() if last else nn.Conv1d(d_out, d_out, 3, stride=2, padding=1)]))
        mid = config.down_dims[-1]
        self.mid = nn.ModuleList([FiLMResidualBlock(mid, mid, film_dim, k, g),
                                  FiLMResidualBlock(mid, mid, film_dim, k, g)])
        self.up = nn.ModuleList()
        # As in Diffusion Policy, every up level upsamples (the finest skip is not concatenated).
        for d_in, d_out in reversed(levels[1:]):
            self.up.append(nn.ModuleList([
                FiLMResidualBlock(2 * d_out, d_in, film_dim, k, g), FiLMResidualBlock(d_in, d_in, film_dim, k, g),
                nn.ConvTranspose1d(d_in, d_in, 4, stride=2, padding=1)]))
        start = config.down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(start, start, k, g), nn.Conv1d(start, action_dim, 1))

    def forward(self, x: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict ``(B, H, D)`` from the ``(B, H, D)`` noisy chunk, ``(B,)`` network time and ``(B, cond_dim)``."""
        film = torch.cat([self.time_embedding(time), cond], dim=-1)
        h = x.transpose(1, 2)  # (B, D, H)
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, film), film)
            skips.append(h)
            h = down(h)
        for res in self.mid:
            h = res(h, film)
        for res1, res2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, film), film))
        return self.final(h).transpose(1, 2)
