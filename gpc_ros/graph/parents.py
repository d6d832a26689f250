"""Analytic goal-reaching parents for the graph (no network).

The parents of ``gpc-ros bringup --sim`` until trained sim-task parents exist, and an example of the
bring-your-own-parent factory path (``factory: gpc_ros.graph.parents:goal_parent``).

The parent observes the TCP position (``observation.state``, ``(B, T, 3)`` m in ``fr3_link0``, the newest frame
last) and wants a chunk of absolute TCP positions that head from there to its ``goal_m`` at ``speed_m_s`` and stay
there; its action distribution is Gaussian around that path with standard deviation ``std_m``, so its predictions
are exact (:class:`gpc_ros.compose.analytic.GaussianParent`). Two such parents with different goals composed with
convex weights ``w`` settle the arm at ``sum_i w_i goal_i`` (equal variances), which is what the graph tests check
on franky-sim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.compose.schedule import FlowTime, VPTime, make_vp_scheduler

#: The shared action normalisation of the analytic parents: the driver's default workspace box (m, fr3_link0).
WORKSPACE_LOW_M = (0.25, -0.40, 0.05)
WORKSPACE_HIGH_M = (0.75, 0.40, 0.70)


def path_to_goal(current_m: np.ndarray, goal_m: np.ndarray, horizon: int, dt_s: float, speed_m_s: float
                 ) -> np.ndarray:
    """``(H, 3)`` absolute positions from ``current_m`` toward ``goal_m`` at ``speed_m_s``, then staying there."""
    delta = goal_m - current_m
    dist = float(np.linalg.norm(delta))
    travel = np.minimum(np.arange(1, horizon + 1) * dt_s * speed_m_s, dist)
    direction = delta / dist if dist > 1e-9 else np.zeros(3)
    return current_m[None, :] + travel[:, None] * direction[None, :]


class GoalParent(GaussianParent):
    """A :class:`GaussianParent` whose mean is the path from the observed TCP position to ``goal_m``."""

    def __init__(self, name: str, goal_m: Sequence[float], parameterization: str = "epsilon",
                 time_convention: str = "vp", horizon: int = 16, dt_s: float = 0.1, speed_m_s: float = 0.1,
                 std_m: float = 0.002) -> None:
        norm = ActionNormalization.min_max(WORKSPACE_LOW_M, WORKSPACE_HIGH_M)
        half_range = (np.asarray(WORKSPACE_HIGH_M) - np.asarray(WORKSPACE_LOW_M)) / 2.0
        var = torch.as_tensor((std_m / half_range) ** 2, dtype=torch.float64)  # std in the normalised space
        if time_convention == "vp":
            convention = VPTime(make_vp_scheduler("ddpm", num_train_timesteps=100).alphas_cumprod)
        elif time_convention == "flow":
            convention = FlowTime()
        else:
            raise ValueError(f"GoalParent.time_convention must be 'vp' or 'flow'; got {time_convention!r}")
        super().__init__(name, parameterization, convention, horizon, 3, var=var, normalization=norm)
        self.goal_m = np.asarray(goal_m, dtype=np.float64)
        if self.goal_m.shape != (3,) or not np.all(np.isfinite(self.goal_m)):
            raise ValueError(f"GoalParent.goal_m must be 3 finite numbers (m, fr3_link0); got {list(goal_m)}")
        self.dt_s, self.speed_m_s = float(dt_s), float(speed_m_s)

    def encode(self, observation) -> torch.Tensor:
        """``{"observation.state": (B, T, 3)}`` -> the normalised mean path ``(B, H, 3)``."""
        state = np.asarray(observation["observation.state"], dtype=np.float64)
        if state.ndim == 2:
            state = state[None]
        paths = np.stack([path_to_goal(s[-1, :3], self.goal_m, self.action_horizon, self.dt_s, self.speed_m_s)
                          for s in state])
        return super().encode(self.normalization.normalize(torch.as_tensor(paths)))


def goal_parent(name: str, **kwargs) -> GoalParent:
    """Factory for ``policy_host_node`` (``factory: gpc_ros.graph.parents:goal_parent``).

    Args:
        name: The parent's name.
        **kwargs: The :class:`GoalParent` keyword arguments (the node's ``factory_kwargs``, JSON).
    """
    return GoalParent(name, **kwargs)
