"""Composition operators: how K parents' predictions become one (the weights' meaning and allowed range).

All operators combine the parents' noise predictions (equivalently their scores ``-eps / sigma``) with weights
``w`` (``(K,)`` or ``(N, K)`` for N candidate weight vectors), position by position (see
:mod:`gpc_ros.compose.horizon` for unequal horizons)::

    eps_hat = sum_i w_i eps_i(x_t, t, o_i)                                      (GPC)

* :class:`ConvexOperator` — the GPC default: ``w_i >= 0``, ``sum w_i = 1``. Because every parent's ``(eps_i, x0_i)``
  satisfies ``x_t = alpha x0_i + sigma eps_i``, a convex combination of eps equals the same convex combination of
  x0, v or flow velocity: the result does not depend on the parameterisation the weights are applied in.
* :class:`LinearOperator` — general linear weights, allowed only when chosen explicitly: weights outside [0, 1]
  (classifier-free-guidance style ``w = (1 + g, -g)``) still summing to 1, or, with
  ``allow_unnormalized=True``, any finite weights. With ``sum w != 1`` the combination is defined on eps (a weighted
  sum of scores) and ``x0_hat`` follows from it; AND / product-of-experts ``p ∝ prod_i p_i`` corresponds to the sum
  of scores, i.e. ``w = (1, ..., 1)`` (:func:`product_of_experts_weights`; exact at ``t = 0``, approximate for
  noised marginals).
* :class:`MixtureOperator` — OR: sample from the mixture ``sum_i w_i p_i``. Exact by ancestral sampling: each
  sampled chunk (row) picks ONE parent with probability ``w_i`` (from the sampling generator) and follows that
  parent alone, which is what the one-hot row weights returned by :meth:`row_weights` do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from gpc_ros.compose.errors import InvalidWeightsError

SUM_TOLERANCE = 1e-6
"""``|sum w - 1|`` accepted as 1."""


def as_weight_matrix(weights: object, parent_names: Sequence[str]) -> torch.Tensor:
    """``(K,)`` or ``(N, K)`` weights -> float64 ``(N, K)``; errors name the parents expected."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    k = len(parent_names)
    if w.dim() != 2 or w.shape[1] != k or w.shape[0] == 0:
        raise InvalidWeightsError(
            f"weights must have shape (K,) or (N, K) with K = {k} for parents {list(parent_names)}; "
            f"got shape {tuple(w.shape)}")
    bad = ~torch.isfinite(w)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise InvalidWeightsError(
            f"weight of parent {parent_names[col]!r} in candidate {row} is not finite ({float(w[row, col])})",
            parent=parent_names[col])
    return w


def _describe(row: torch.Tensor, parent_names: Sequence[str]) -> str:
    return ", ".join(f"{n}={float(v):.6g}" for n, v in zip(parent_names, row))


def _check_nonnegative(w: torch.Tensor, parent_names: Sequence[str], operator: str) -> None:
    negative = w < 0
    if negative.any():
        row, col = (int(i) for i in negative.nonzero()[0])
        raise InvalidWeightsError(
            f"{operator} operator: weight of parent {parent_names[col]!r} in candidate {row} is negative "
            f"({float(w[row, col]):.6g}); weights must be >= 0 (use LinearOperator for weights outside [0, 1])",
            parent=parent_names[col])


def _check_sum_to_one(w: torch.Tensor, parent_names: Sequence[str], operator: str) -> None:
    sums = w.sum(dim=1)
    off = (sums - 1.0).abs() > SUM_TOLERANCE
    if off.any():
        row = int(off.nonzero()[0, 0])
        raise InvalidWeightsError(
            f"{operator} operator: weights of candidate {row} ({_describe(w[row], parent_names)}) sum to "
            f"{float(sums[row]):.6g}, not 1 (enable LinearOperator(allow_unnormalized=True) to extrapolate)")


class CompositionOperator(ABC):
    """Checks weights and turns them into one weight vector per sampled row."""

    name: str = ""

    @property
    @abstractmethod
    def weights_sum_to_one(self) -> bool:
        """True when every accepted weight vector sums to 1 (then eps- and x0-space combinations agree)."""

    @abstractmethod
    def check(self, weights: torch.Tensor, parent_names: Sequence[str]) -> None:
        """Raise :class:`InvalidWeightsError` (naming the parent) for weights this operator does not accept."""

    def row_weights(self, weights: torch.Tensor, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(N, K)`` candidates -> ``(N * B, K)`` weights for rows ``i * B + b``."""
        return weights.repeat_interleave(batch_size, dim=0)


class ConvexOperator(CompositionOperator):
    """GPC default: ``w >= 0``, ``sum w = 1``."""

    name = "convex"

    @property
    def weights_sum_to_one(self) -> bool:
        """Always: convex weights sum to 1."""
        return True

    def check(self, weights: torch.Tensor, parent_names: Sequence[str]) -> None:
        """Weights must be >= 0 and sum to 1."""
        _check_nonnegative(weights, parent_names, self.name)
        _check_sum_to_one(weights, parent_names, self.name)


class LinearOperator(CompositionOperator):
    """Any finite weights (CFG-style negatives); ``sum w = 1`` unless ``allow_unnormalized``."""

    name = "linear"

    def __init__(self, allow_unnormalized: bool = False) -> None:
        self.allow_unnormalized = allow_unnormalized

    @property
    def weights_sum_to_one(self) -> bool:
        """Unless ``allow_unnormalized``."""
        return not self.allow_unnormalized

    def check(self, weights: torch.Tensor, parent_names: Sequence[str]) -> None:
        """Weights must sum to 1 unless ``allow_unnormalized``."""
        if not self.allow_unnormalized:
            _check_sum_to_one(weights, parent_names, self.name)


class MixtureOperator(ConvexOperator):
    """OR: each row follows one parent drawn with probability ``w_i`` (exact mixture sampling); convex weights."""

    name = "mixture"

    def row_weights(self, weights: torch.Tensor, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """One-hot rows: each row follows one parent drawn with probability ``w_i``."""
        rows = weights.repeat_interleave(batch_size, dim=0)
        chosen = torch.multinomial(rows.float().clamp_min(0), 1, generator=generator).squeeze(1)
        return torch.nn.functional.one_hot(chosen, rows.shape[1]).to(rows.dtype)


OPERATORS: dict[str, type[CompositionOperator]] = {
    "convex": ConvexOperator, "linear": LinearOperator, "mixture": MixtureOperator}


def make_operator(name: str, allow_unnormalized: bool = False) -> CompositionOperator:
    """Operator by config name (``convex`` | ``linear`` | ``mixture``)."""
    if name not in OPERATORS:
        raise ValueError(f"operator must be one of {sorted(OPERATORS)}; got {name!r}")
    if name == "linear":
        return LinearOperator(allow_unnormalized)
    if allow_unnormalized:
        raise ValueError(f"allow_unnormalized applies only to operator 'linear'; got operator {name!r}")
    return OPERATORS[name]()


def product_of_experts_weights(k: int) -> torch.Tensor:
    """AND: ``w = (1, ..., 1)`` (sum of scores); use with ``LinearOperator(allow_unnormalized=True)``."""
    return torch.ones(k, dtype=torch.float64)
