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


class NonFinitePredictionError(CompositionError):
    """A parent returned NaN or inf (or a wrongly shaped prediction) at some denoising step."""
