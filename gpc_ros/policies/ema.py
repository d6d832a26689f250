"""Exponential moving average of a model's weights (Diffusion Policy's EMA with a warm-up of the decay).

``decay(step) = min(max_decay, 1 - (1 + step / inv_gamma) ** -power)`` (``inv_gamma = 1``), so early weights are
forgotten quickly and the average settles to ``max_decay``. The EMA copy is what checkpoints ship.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds an eval-mode copy of ``model`` whose parameters track the training weights."""

    def __init__(self, model: nn.Module, max_decay: float = 0.999, power: float = 0.75) -> None:
        if not 0.0 <= max_decay < 1.0:
            raise ValueError(f"EMA max_decay must be in [0, 1); got {max_decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.power = max_decay, power
        self.updates = 0

    def decay(self) -> float:
        """The decay the next :meth:`update` applies: ``min(max_decay, 1 - (1 + updates) ** -power)``, >= 0."""
        return min(self.max_decay, max(0.0, 1.0 - (1.0 + self.updates) ** -self.power))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights by ``1 - decay()``.

        Floating-point parameters and buffers are blended; integer buffers (e.g. batch-norm counters) are copied.
        """
        d = self.decay()
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        floats = [(e, p.detach()) for e, p in pairs if e.is_floating_point()]
        if floats:
            ema_t, new_t = map(list, zip(*floats))
            torch._foreach_lerp_(ema_t, new_t, 1.0 - d)  # ema <- d * ema + (1 - d) * new, in one fused call
        for e, p in pairs:
            if not e.is_floating_point():
                e.copy_(p)
        self.updates += 1

    def state_dict(self) -> dict:
        """The averaged model's state dict and the update count, for resuming training."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights and update count saved by :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
