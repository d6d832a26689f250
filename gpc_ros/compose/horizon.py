"""Parents with different action horizons on one noise trajectory.

The composer samples ONE chunk of the longest horizon ``H_max``; every parent sees (and predicts) the first
``H_i`` steps of it, since every chunk starts at the same instant. Position ``h`` combines only the parents whose
horizon covers it; where some parents do not reach, the covering parents' weights are rescaled to the row's total
weight ``sum_i w_i`` (so a convex row stays convex), which keeps the longest parent's tail as its own prediction.
If the covering weights sum to zero the tail is shared equally among the covering parents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def position_weights(row_weights: torch.Tensor, horizons: Sequence[int]) -> torch.Tensor:
    """``(M, K)`` row weights, ``K`` horizons -> ``(M, K, H_max)`` weight of parent ``k`` at position ``h``."""
    h_max = max(horizons)
    positions = torch.arange(h_max, device=row_weights.device)
    covers = (positions[None, :] < torch.as_tensor(list(horizons), device=row_weights.device)[:, None])
    covers = covers.to(row_weights.dtype)  # (K, H_max)
    w = row_weights[:, :, None] * covers[None]  # (M, K, H_max)
    if bool(covers.all()):
        return w
    total = row_weights.sum(dim=1, keepdim=True)[:, :, None]  # (M, 1, 1)
    covered = w.sum(dim=1, keepdim=True)  # (M, 1, H_max)
    n_cover = covers.sum(dim=0)[None, None, :]  # (1, 1, H_max)
    degenerate = covered.abs() < 1e-12
    rescaled = torch.where(degenerate, covers[None] * (torch.where(total.abs() < 1e-12, 1.0, total) / n_cover),
                           w * (total / torch.where(degenerate, 1.0, covered)))
    if (total.abs() < 1e-12).any():  # rows whose weights sum to 0 cannot be rescaled to their total
        rescaled = torch.where(total.abs() < 1e-12, torch.where(degenerate, rescaled, w), rescaled)
    return rescaled


def combine(predictions: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``K`` predictions ``(M, H_i, D)`` and ``(M, K, H_max)`` weights -> ``(M, H_max, D)`` weighted sum."""
    m, _, h_max = weights.shape
    if all(pred.shape[1] == h_max for pred in predictions):
        out = predictions[0] * weights[:, 0, :, None]
        for k in range(1, len(predictions)):
            out.addcmul_(predictions[k], weights[:, k, :, None])
        return out
    out = torch.zeros(m, h_max, predictions[0].shape[2], dtype=predictions[0].dtype, device=predictions[0].device)
    for k, pred in enumerate(predictions):
        h = pred.shape[1]
        out[:, :h].addcmul_(pred, weights[:, k, :h, None])
    return out
