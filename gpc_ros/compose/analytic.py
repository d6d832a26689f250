"""Gaussian parents whose exact prediction is known in closed form (reference parents for tests and benches).

Target: every action element independent, ``x0 ~ N(mean, var)`` (``mean`` from the observation, ``var`` fixed).
At noise level ``(alpha, sigma)``, ``x = alpha x0 + sigma eps`` is Gaussian with variance
``alpha^2 var + sigma^2`` and covariances ``Cov(eps, x) = sigma``, ``Cov(x0, x) = alpha var``, so the exact
(minimum-MSE) predictions a perfectly trained network converges to are

    E[eps | x] = sigma (x - alpha mean) / (alpha^2 var + sigma^2)
    E[x0 | x]  = mean + alpha var (x - alpha mean) / (alpha^2 var + sigma^2)

and the parameterisation-specific output follows from :func:`~gpc_ros.compose.parameterization.from_eps_x0`.
"""

from __future__ import annotations

import torch

from gpc_ros.compose.parameterization import Parameterization, from_eps_x0
from gpc_ros.compose.parent import ActionNormalization, Encoding
from gpc_ros.compose.schedule import TimeConvention


class GaussianParent:
    """A parent whose target action distribution is ``N(mean, var)`` per element (exact, no network).

    ``encode(mean)`` takes the observation to be the target mean ``(B, H, D)`` (or ``(H, D)``); ``var`` is
    ``(H, D)`` or broadcastable to it. The parent evaluates its exact prediction at the noise level its OWN
    ``time_convention`` assigns to the timestep it is given, as a trained network would.
    """

    def __init__(
        self,
        name: str,
        parameterization: Parameterization | str,
        time_convention: TimeConvention,
        action_horizon: int,
        action_dim: int,
        var: torch.Tensor | float = 1.0,
        normalization: ActionNormalization | None = None,
    ) -> None:
        self.name = name
        self.parameterization = Parameterization.parse(parameterization)
        self.time_convention = time_convention
        self.action_horizon = action_horizon
        self.action_dim = action_dim
        self.var = torch.as_tensor(var, dtype=torch.float64).expand(action_horizon, action_dim)
        self.normalization = normalization or ActionNormalization()
        self.calls = 0

    def encode(self, observation: torch.Tensor) -> Encoding:
        """The observation is the target mean ``(B, H, D)`` (or ``(H, D)``)."""
        mean = torch.as_tensor(observation, dtype=torch.float64)
        if mean.dim() == 2:
            mean = mean.unsqueeze(0)
        return mean.expand(mean.shape[0], self.action_horizon, self.action_dim)

    def predict(self, x_t: torch.Tensor, timestep: float, encoding: Encoding) -> torch.Tensor:
        """The exact prediction at the noise level of ``timestep`` in this parent's own convention."""
        self.calls += 1
        level = self.time_convention.noise_level(timestep)
        a, s = level.alpha, level.sigma
        x = x_t.to(torch.float64)
        mean = encoding
        var = self.var.to(x.device)
        residual = (x - a * mean) / (a * a * var + s * s)
        eps = s * residual
        x0 = mean + a * var * residual
        return from_eps_x0(self.parameterization, eps, x0, a, s).to(x_t.dtype)
