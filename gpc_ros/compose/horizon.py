"""Parents with different action horizons on one noise trajectory.

The composer samples ONE chunk of the longest horizon ``H_max``; every parent sees (and predicts) the first
``H_i`` steps of it, since every chunk starts at the same instant. The tail rule, per sampled row with weights
``w``:

* Position ``h`` combines only the parents that cover it (``h < H_i``) AND have a non-zero weight in the row.
  Where some weighted parents do not reach, the covering ones' weights are rescaled to the row's total weight
  ``sum_i w_i`` (so a convex row stays convex): with two weighted parents the tail is the longer parent's own
  prediction. (Linear weights whose covering part sums to zero share the row total equally among the covering
  weighted parents.)
* The row's composed length is the longest horizon among its weighted parents (:func:`composed_horizons`).
  Positions beyond it are covered by no weighted parent: nothing defines them, so no parent is asked for them
  (they get zero weight, and a parent with zero weight in every row is not called at all) and the finished chunk
  holds the row's last composed action there (:func:`hold_tail`, like a warm start's ``repeat_last`` padding).
  A mixture row that drew a short parent is therefore exactly that parent's chunk followed by its last action.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ZERO = 1e-12
"""Weights (and weight sums) with absolute value below this count as zero."""


def position_weights(row_weights: torch.Tensor, horizons: Sequence[int]) -> torch.Tensor:
    """``(M, K)`` row weights, ``K`` horizons -> ``(M, K, H_max)`` weight of parent ``k`` at position ``h``."""
    h_max = max(horizons)
    positions = torch.arange(h_max, device=row_weights.device)
    covers = (positions[None, :] < torch.as_tensor(list(horizons), device=row_weights.device)[:, None])
    covers = covers.to(row_weights.dtype)  # (K, H_max)
    w = row_weights[:, :, None] * covers[None]  # (M, K, H_max)
    if bool(covers.all()):
        return w
    weighted = (row_weights.abs() >= ZERO).to(row_weights.dtype)[:, :, None] * covers[None]  # (M, K, H_max)
    n_weighted = weighted.sum(dim=1, keepdim=True)  # (M, 1, H_max): weighted parents covering h
    total = row_weights.sum(dim=1, keepdim=True)[:, :, None]  # (M, 1, 1)
    covered = w.sum(dim=1, keepdim=True)  # (M, 1, H_max)
    degenerate = covered.abs() < ZERO  # covering weights cancel (linear) or no weighted parent covers h
    rescaled = torch.where(degenerate, weighted * (total / n_weighted.clamp_min(1.0)),
                           w * (total / torch.where(degenerate, 1.0, covered)))
    zero_total = total.abs() < ZERO  # rows whose weights sum to 0 cannot be rescaled to their total
    return torch.where(zero_total, w, rescaled)


def composed_horizons(row_weights: torch.Tensor, horizons: Sequence[int]) -> torch.Tensor:
    """``(M, K)`` row weights -> ``(M,)`` longest horizon among each row's weighted parents (``H_max`` if none)."""
    h = torch.as_tensor(list(horizons), dtype=torch.long, device=row_weights.device)
    weighted = row_weights.abs() >= ZERO
    lengths = torch.where(weighted, h[None, :], torch.zeros_like(h)[None, :]).max(dim=1).values
    return torch.where(lengths > 0, lengths, torch.full_like(lengths, int(h.max())))


def hold_tail(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(M, H, D)`` chunks with row ``m``'s positions ``>= lengths[m]`` replaced by its action ``lengths[m] - 1``."""
    h = x.shape[1]
    if bool((lengths >= h).all()):
        return x
    positions = torch.arange(h, device=x.device)
    source = torch.minimum(positions[None, :], (lengths - 1)[:, None])  # (M, H)
    return torch.gather(x, 1, source[:, :, None].expand(-1, -1, x.shape[2]))


def combine(predictions: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``K`` predictions ``(M, H_i, D)`` and ``(M, K, H_max)`` weights -> ``(M, H_max, D)`` weighted sum."""
    total = WeightedSum(weights, [pred.shape[1] for pred in predictions])
    for pred in predictions:
        total.add(pred)
    return total.out


class WeightedSum:
    """:func:`combine` one prediction at a time, in parent order, with the same ops (so the same sum, bit for bit).

    A composer adds the first parent's prediction while the others' are still being made. ``weights``
    ``(M, K, H_max)``; ``horizons``: the K predictions' ``H_i``, in order. :meth:`add` each prediction
    ``(M, H_i, D)`` in that order; ``out`` is the ``(M, H_max, D)`` sum once all K are added.
    """

    def __init__(self, weights: torch.Tensor, horizons: Sequence[int]) -> None:
        self.weights = weights
        self.full = all(h == weights.shape[2] for h in horizons)
        self.out: torch.Tensor | None = None
        self.added = 0

    def add(self, prediction: torch.Tensor) -> None:
        """Add the next parent's prediction."""
        k, w = self.added, self.weights
        if self.full:
            if k == 0:
                self.out = prediction * w[:, 0, :, None]
            else:
                self.out.addcmul_(prediction, w[:, k, :, None])
        else:
            if k == 0:
                m, _, h_max = w.shape
                self.out = torch.zeros(m, h_max, prediction.shape[2], dtype=prediction.dtype,
                                       device=prediction.device)
            h = prediction.shape[1]
            self.out[:, :h].addcmul_(prediction, w[:, k, :h, None])
        self.added = k + 1
