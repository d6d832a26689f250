"""Training objectives agree with the core's conventions: what a parent learns is what the composer assumes."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from gpc_ros.compose.parameterization import from_eps_x0, to_eps_x0
from gpc_ros.policies.objectives import FlowMatchingObjective, VPDiffusionObjective


@pytest.mark.parametrize("parameterization", ["epsilon", "sample", "v_prediction"])
def test_vp_targets_decode_to_the_true_eps_and_x0_at_the_core_noise_level(parameterization) -> None:
    objective = VPDiffusionObjective(parameterization, 100, "squaredcos_cap_v2", True)
    x0 = torch.rand(64, 16, 3, dtype=torch.float64) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    x_t, time, target = objective.training_example(x0, gen)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)  # same first draw
    assert bool((time == time.round()).all()) and 0 <= float(time.min()) and float(time.max()) <= 99
    for i in range(0, 64, 7):
        level = objective.time_convention.noise_level(float(time[i]))
        torch.testing.assert_close(x_t[i], level.alpha * x0[i] + level.sigma * noise[i])
        eps, clean = to_eps_x0(objective.parameterization, target[i], x_t[i], level.alpha, level.sigma)
        torch.testing.assert_close(eps, noise[i])
        torch.testing.assert_close(clean, x0[i])


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_flow_target_is_the_core_flow_velocity_at_the_core_time(sampling) -> None:
    objective = FlowMatchingObjective(time_scale=100.0, time_sampling=sampling)
    x0 = torch.rand(64, 16, 3, dtype=torch.float64)
    x_t, time, target = objective.training_example(x0, torch.Generator().manual_seed(1))
    assert 0 <= float(time.min()) and float(time.max()) <= 100.0
    for i in range(0, 64, 5):
        level = objective.time_convention.noise_level(float(time[i]))
        assert math.isclose(level.sigma, float(time[i]) / 100.0, rel_tol=1e-12)
        eps, clean = to_eps_x0(objective.parameterization, target[i], x_t[i], level.alpha, level.sigma)
        torch.testing.assert_close(clean, x0[i])
        torch.testing.assert_close(x_t[i], level.alpha * clean + level.sigma * eps)


@pytest.mark.parametrize("parameterization", ["epsilon", "sample", "v_prediction", "flow_velocity"])
def test_training_targets_are_the_cores_own_conversion_at_the_conventions_level(parameterization) -> None:
    """To float64 rounding: x_t and the target are what the composer's inversion assumes, at the exact level
    ``time_convention.noise_level(network time)`` the composer converts at (issue 10, item 7)."""
    objective = (FlowMatchingObjective(time_scale=1000.0) if parameterization == "flow_velocity"
                 else VPDiffusionObjective(parameterization, 100, "squaredcos_cap_v2", False))
    x0 = torch.rand(32, 8, 2, dtype=torch.float64) * 2 - 1
    x_t, time, target = objective.training_example(x0, torch.Generator().manual_seed(3))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=x0.dtype)
    for i in range(32):
        level = objective.time_convention.noise_level(float(time[i]))
        torch.testing.assert_close(x_t[i], level.alpha * x0[i] + level.sigma * noise[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(target[i], from_eps_x0(objective.parameterization, noise[i], x0[i], level.alpha,
                                                          level.sigma), rtol=0, atol=1e-12)


def test_policies_never_import_rclpy() -> None:
    code = ("import sys, gpc_ros.policies, gpc_ros.policies.train_cli, gpc_ros.policies.evaluation, "
            "gpc_ros.policies.synthetic; print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
