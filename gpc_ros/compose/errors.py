"""Exceptions of the GPC core: every one names the parent (or field) at fault."""

from __future__ import annotations


class CompositionError(ValueError):
    """A composition cannot go ahead; ``parent`` names the offending parent policy (or is ``None``)."""

    def __init__(self, message: str, parent: str | None = None) -> None:
        super().__init__(message)
        self.parent = parent


class IncompatibleParentError(CompositionError):
    """Parents disagree on action dimension, normalisation, parameterisation or time convention."""


class InvalidWeightsError(CompositionError):
    """Weights are not allowed by the operator (negative, not summing to 1, wrong length, not finite)."""


class InvalidPredictionError(CompositionError):
    """A parent returned something that is not a tensor of the shape it was given (a list, an array, ...)."""


class NonFinitePredictionError(CompositionError):
    """A parent returned NaN or inf at some denoising step."""
