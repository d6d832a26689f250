"""GPC core (no ROS): compose pre-trained diffusion / flow policies at test time.

``eps_hat = sum_i w_i eps_i(x_t, t, o_i)`` on a shared grid, then one sampler step. Modules, one concept each:
:mod:`.parameterization` (eps / x0 / v / flow-velocity conversions), :mod:`.schedule` (time conventions and their
alignment), :mod:`.parent` (the parent contract), :mod:`.operators` (convex, linear, mixture), :mod:`.horizon`
(unequal horizons), :mod:`.sampler` (DDPM, DDIM, flow Euler/Heun), :mod:`.warm_start`, :mod:`.composer`,
:mod:`.search` (grid and Thompson-sampling weight search), :mod:`.analytic` (closed-form Gaussian parents).
See docs/compose.md.
"""

from gpc_ros.compose.composer import ComposedChunk, Composer, ComposerConfig, ComposerStats, ParallelChooser
from gpc_ros.compose.errors import (
                                    CompositionError,
                                    IncompatibleParentError,
                                    InvalidPredictionError,
                                    InvalidWeightsError,
                                    NonFinitePredictionError,
)
from gpc_ros.compose.operators import ConvexOperator, LinearOperator, MixtureOperator, make_operator
from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.parent import ActionNormalization, ParentPolicy
from gpc_ros.compose.sampler import SamplerConfig, make_sampler
from gpc_ros.compose.schedule import FlowTime, NoiseLevel, VPTime, make_vp_scheduler
from gpc_ros.compose.warm_start import RunningPlan, WarmStart, WarmStartConfig, warm_start_from_plan

__all__ = [
    "ActionNormalization", "ComposedChunk", "Composer", "ComposerConfig", "ComposerStats", "CompositionError",
    "ConvexOperator", "FlowTime", "IncompatibleParentError", "InvalidPredictionError", "InvalidWeightsError",
    "LinearOperator", "MixtureOperator", "NoiseLevel", "NonFinitePredictionError", "ParallelChooser",
    "Parameterization", "ParentPolicy", "RunningPlan", "SamplerConfig",
    "VPTime", "WarmStart", "WarmStartConfig", "make_operator", "make_sampler", "make_vp_scheduler",
    "warm_start_from_plan",
]
