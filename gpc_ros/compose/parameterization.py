"""What a parent network predicts, and the exact affine maps between predictions.

Every parent works on a noisy action chunk ``x = alpha * x0 + sigma * eps`` (``x0`` clean normalised actions,
``eps ~ N(0, I)``), where ``(alpha, sigma)`` is the noise level of ``x`` in the parent's OWN convention:

* variance preserving (DDPM/DDIM, diffusers ``alphas_cumprod``): ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``;
* rectified flow (pi0-style, diffusers ``FlowMatchEulerDiscreteScheduler``): ``x_t = (1 - t) x0 + t eps``, i.e.
  ``alpha = 1 - t``, ``sigma = t`` (noise at ``t = 1``).

The four parameterisations and their conversions to the pair ``(eps, x0)`` (this module is the only place that
states them):

=================  ==========================  ===============================================================
prediction ``p``   definition                  ``eps``, ``x0`` from ``p`` and ``x``
=================  ==========================  ===============================================================
EPSILON            ``p = eps``                 ``eps = p``;  ``x0 = (x - sigma p) / alpha``
SAMPLE             ``p = x0``                  ``x0 = p``;  ``eps = (x - alpha p) / sigma``
V_PREDICTION       ``p = alpha eps - sigma x0`` ``eps = (sigma x + alpha p) / (alpha^2 + sigma^2)``;
                                               ``x0 = (alpha x - sigma p) / (alpha^2 + sigma^2)``
FLOW_VELOCITY      ``p = dx/dt = eps - x0``    ``eps = x + alpha p``;  ``x0 = x - sigma p``  (``alpha + sigma = 1``)
=================  ==========================  ===============================================================

(For VP, ``alpha^2 + sigma^2 = 1`` and the V_PREDICTION row is diffusers' ``x0 = alpha x - sigma v``.)

The forward process itself is :func:`forward`; :func:`to_eps_x0` inverts a prediction (test time: the composer),
:func:`from_eps_x0` builds one (training targets, :mod:`gpc_ros.policies.objectives`, and the analytic parents), so
training and test-time inversion share these lines. ``alpha`` and ``sigma`` may be floats or tensors broadcastable
to the chunk (a batch of training times).
"""

from __future__ import annotations

import enum

import torch

Scalar = float | torch.Tensor


class Parameterization(str, enum.Enum):
    """What a parent network outputs for a noisy chunk ``x``; values match diffusers' ``prediction_type``."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"
    FLOW_VELOCITY = "flow_velocity"

    @classmethod
    def parse(cls, value: object, *, field: str = "parameterization") -> Parameterization:
        """``Parameterization`` from itself or its string value; ``ValueError`` naming ``field`` otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(p.value) for p in cls)
            raise ValueError(f"{field} must be one of {allowed}; got {value!r}") from None


    @property
    def needs_flow_time(self) -> bool:
        """True when the conversions hold only on a rectified-flow level (``alpha + sigma = 1``)."""
        return self is Parameterization.FLOW_VELOCITY


def forward(x0: torch.Tensor, eps: torch.Tensor, alpha: Scalar, sigma: Scalar) -> torch.Tensor:
    """The forward (noising) process ``x = alpha x0 + sigma eps``."""
    return alpha * x0 + sigma * eps


def to_eps_x0(
    parameterization: Parameterization, prediction: torch.Tensor, x: torch.Tensor, alpha: Scalar, sigma: Scalar,
    with_x0: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact ``(eps, x0)`` implied by ``prediction`` of ``x`` at noise level ``(alpha, sigma)`` (any shape).

    ``x0`` is ``None`` when not ``with_x0`` and the parent predicts eps (saves two tensor ops per step).
    """
    p = parameterization if type(parameterization) is Parameterization else Parameterization.parse(parameterization)
    if p is Parameterization.EPSILON:
        return prediction, ((x - sigma * prediction) / alpha if with_x0 else None)
    if p is Parameterization.SAMPLE:
        return (x - alpha * prediction) / sigma, prediction
    if p is Parameterization.V_PREDICTION:
        norm = alpha * alpha + sigma * sigma
        return (sigma * x + alpha * prediction) / norm, (alpha * x - sigma * prediction) / norm
    # FLOW_VELOCITY
    return x + alpha * prediction, x - sigma * prediction


def from_eps_x0(
    parameterization: Parameterization, eps: torch.Tensor, x0: torch.Tensor, alpha: Scalar, sigma: Scalar
) -> torch.Tensor:
    """The prediction a ``parameterization`` network makes when its implied ``(eps, x0)`` are these."""
    p = Parameterization.parse(parameterization)
    if p is Parameterization.EPSILON:
        return eps
    if p is Parameterization.SAMPLE:
        return x0
    if p is Parameterization.V_PREDICTION:
        return alpha * eps - sigma * x0
    return eps - x0
