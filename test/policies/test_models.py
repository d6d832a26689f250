"""Shapes, dtypes, observation validation, config validation, and the parent contract of every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpc_ros.compose import FlowTime, ParentPolicy, VPTime
from gpc_ros.policies import DiffusionConfig, DP3Config, FlowConfig, make_policy
from gpc_ros.policies.encoders import ObservationConfig, PointCloudEncoder, PointCloudEncoderConfig
from gpc_ros.policies.normalization import fit_min_max
from gpc_ros.policies.unet1d import UnetConfig

from .conftest import observation, tiny_config

FAMILIES = [("diffusion", {}, "epsilon", VPTime), ("dp3", {}, "sample", VPTime),
            ("dp3", {"parameterization": "epsilon"}, "epsilon", VPTime),
            ("flow", {}, "flow_velocity", FlowTime), ("flow", {"modality": "pointcloud"}, "flow_velocity", FlowTime)]


def norms(config):
    rng = np.random.default_rng(1)
    return (fit_min_max(rng.uniform(0.2, 0.7, (50, config.action_dim))),
            fit_min_max(rng.uniform(0.2, 0.7, (50, config.observation.state_dim))))


@pytest.mark.parametrize("policy_type,kwargs,param,convention", FAMILIES)
def test_encode_once_predict_many_shapes_dtypes_and_contract(policy_type, kwargs, param, convention) -> None:
    torch.manual_seed(0)
    config = tiny_config(policy_type, **kwargs)
    policy = make_policy(policy_type, config, *norms(config))
    parent = policy.as_parent("p")
    assert isinstance(parent, ParentPolicy)
    assert parent.parameterization.value == param and isinstance(parent.time_convention, convention)
    assert (parent.action_horizon, parent.action_dim) == (8, 3)
    encoding = parent.encode(observation(config, batch=3))
    assert encoding.shape == (3, policy.encoding_dim) and encoding.dtype == torch.float32
    assert not encoding.requires_grad
    # 11 candidates x 3 observations served from one cached encoding, float32 and float64 in -> same dtype out
    from gpc_ros.compose.parent import repeat_encoding
    rows = repeat_encoding(encoding, 11)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(33, 8, 3, dtype=dtype)
        out = parent.predict(x, 7.0, rows)
        assert out.shape == (33, 8, 3) and out.dtype == dtype and bool(torch.isfinite(out).all())
    # row i * B + b depends on observation b only: the same observation in every candidate gives the same output
    x = torch.randn(3, 8, 3).repeat(11, 1, 1)
    out = parent.predict(x, 7.0, rows).reshape(11, 3, 8, 3)
    torch.testing.assert_close(out, out[:1].expand_as(out), rtol=0, atol=1e-5)


def test_unbatched_observation_and_uint8_vs_float_images_agree() -> None:
    config = tiny_config("diffusion")
    policy = make_policy("diffusion", config, *norms(config)).eval()
    obs = observation(config, batch=1)
    with torch.no_grad():
        batched = policy.encode(obs)
        single = policy.encode({k: v[0] for k, v in obs.items()})
        as_float = policy.encode({**obs, "observation.image": obs["observation.image"].astype(np.float32) / 255.0})
    torch.testing.assert_close(batched, single)
    torch.testing.assert_close(batched, as_float, rtol=1e-5, atol=1e-5)


def test_observation_changes_the_encoding() -> None:
    for policy_type in ("diffusion", "dp3"):
        config = tiny_config(policy_type)
        policy = make_policy(policy_type, config, *norms(config)).eval()
        with torch.no_grad():
            a, b = policy.encode(observation(config, seed=1)), policy.encode(observation(config, seed=2))
        assert float((a - b).abs().max()) > 1e-3


def test_point_cloud_encoder_ignores_point_order() -> None:
    torch.manual_seed(0)
    enc = PointCloudEncoder(PointCloudEncoderConfig(num_points=64, hidden_dims=(16, 32), feature_dim=8)).eval()
    points = torch.randn(4, 64, 3)
    shuffled = points[:, torch.randperm(64)]
    torch.testing.assert_close(enc(points), enc(shuffled))


@pytest.mark.parametrize("mutate,error,words", [
    (lambda o: o.pop("observation.state"), KeyError, ["observation.state", "expects keys"]),
    (lambda o: o.update({"observation.image": o["observation.image"][:, :1]}), ValueError,
     ["observation.image", "(B, 2, 32, 32, 3)", "(2, 1, 32, 32, 3)"]),
    (lambda o: o.update({"observation.state": o["observation.state"][:1]}), ValueError, ["batch size"]),
    (lambda o: o["observation.state"].__setitem__((0, 0, 0), np.nan), ValueError, ["NaN"]),
])
def test_bad_observations_are_rejected_with_the_key_and_shapes(mutate, error, words) -> None:
    config = tiny_config("diffusion")
    policy = make_policy("diffusion", config, *norms(config))
    obs = observation(config)
    mutate(obs)
    with pytest.raises(error) as info:
        policy.encode(obs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("build,words", [
    (lambda: DiffusionConfig(parameterization="sample"), ["DiffusionConfig.parameterization", "'epsilon'", "'sample'"]),
    (lambda: DiffusionConfig(observation=ObservationConfig(modality="pointcloud")),
     ["DiffusionConfig.observation.modality", "'pointcloud'"]),
    (lambda: DP3Config(parameterization="flow_velocity"), ["DP3Config.parameterization", "flow_velocity"]),
    (lambda: DP3Config(parameterization="bogus"), ["DP3Config.parameterization", "'bogus'"]),
    (lambda: FlowConfig(time_scale=0.0), ["FlowConfig.time_scale", "0.0"]),
    (lambda: FlowConfig(action_horizon=10), ["action_horizon", "divisible", "10"]),
    (lambda: DiffusionConfig(num_train_timesteps=5, num_inference_steps=10), ["num_inference_steps", "10"]),
    (lambda: DiffusionConfig(beta_schedule="cosine"), ["beta_schedule", "squaredcos_cap_v2", "'cosine'"]),
    (lambda: UnetConfig(down_dims=(12, 24)), ["UnetConfig.n_groups", "(12, 24)"]),
    (lambda: ObservationConfig(modality="depth"), ["ObservationConfig.modality", "'depth'"]),
])
def test_config_errors_name_field_allowed_and_received(build, words) -> None:
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value)


def test_normalization_dims_must_match_config() -> None:
    config = tiny_config("diffusion")
    with pytest.raises(ValueError, match="action normalization has 2 dims"):
        make_policy("diffusion", config, fit_min_max(np.ones((4, 2))))


def test_constant_dimension_gets_a_finite_range() -> None:
    norm = fit_min_max(np.array([[0.5, 1.0], [0.5, 2.0]]))
    out = norm.normalize(torch.tensor([[0.5, 1.5]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0]], dtype=torch.float64))
