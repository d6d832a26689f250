"""Every family plugs into the GPC core's Composer; different parents compose; a user's module via the adapter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from gpc_ros.compose import (
    ActionNormalization,
    Composer,
    ComposerConfig,
    FlowTime,
    IncompatibleParentError,
    NonFinitePredictionError,
    SamplerConfig,
    VPTime,
    make_vp_scheduler,
)
from gpc_ros.compose.search import paper_grid
from gpc_ros.policies import ModuleParent, make_policy
from gpc_ros.policies.normalization import fit_min_max

from .conftest import observation, tiny_config

RNG = np.random.default_rng(7)
ACTION_NORM = fit_min_max(RNG.uniform(0.2, 0.7, (60, 3)))
STATE_NORM = fit_min_max(RNG.uniform(0.1, 0.5, (60, 3)))


def policy(policy_type: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return make_policy(policy_type, tiny_config(policy_type, **kwargs), ACTION_NORM, STATE_NORM)


SAMPLERS = {"ddim": SamplerConfig("ddim", 5), "ddpm": SamplerConfig("ddpm", 5),
            "flow_euler": SamplerConfig("flow_euler", 5, flow_t_start=0.999),
            "flow_heun": SamplerConfig("flow_heun", 3)}


@pytest.mark.parametrize("policy_type,kwargs,sampler", [
    ("diffusion", {}, "ddim"), ("dp3", {}, "ddim"), ("dp3", {"parameterization": "epsilon"}, "ddpm"),
    ("dp3", {"parameterization": "v_prediction"}, "ddim"), ("flow", {}, "flow_euler"),
    ("flow", {"modality": "pointcloud"}, "flow_heun")])
def test_each_family_alone_gives_chunks_of_the_right_shape_in_physical_units(policy_type, kwargs, sampler) -> None:
    p = policy(policy_type, **kwargs)
    composer = Composer([p.as_parent("only")], ComposerConfig(sampler=SAMPLERS[sampler]))
    enc = composer.encode([observation(p.config, batch=3)])
    chunk = composer.compose(enc, [1.0], generator=0)
    assert chunk.actions.shape == (1, 3, 8, 3) and chunk.actions.dtype == torch.float32
    assert bool(torch.isfinite(chunk.actions).all())
    # the sampled chunk is unnormalised with the stored stats: back in the normalised space it is the core's output
    torch.testing.assert_close(ACTION_NORM.normalize(chunk.actions), chunk.actions_normalized, rtol=1e-5, atol=1e-5)
    again = composer.compose(enc, [1.0], generator=0)
    assert torch.equal(chunk.actions, again.actions)


@pytest.mark.parametrize("pair,sampler", [(("diffusion", "dp3"), "ddim"), (("diffusion", "flow"), "ddim"),
                                          (("dp3", "flow"), "flow_euler")])
def test_two_different_parents_compose_over_eleven_candidates(pair, sampler) -> None:
    a, b = policy(pair[0], seed=1), policy(pair[1], seed=2, **({"modality": "pointcloud"} if pair[1] == "flow"
                                                                  and pair[0] == "dp3" else {}))
    composer = Composer([a.as_parent("a"), b.as_parent("b")], ComposerConfig(sampler=SAMPLERS[sampler]))
    enc = composer.encode([observation(a.config, batch=2, seed=1), observation(b.config, batch=2, seed=2)])
    out = composer.compose(enc, paper_grid(), generator=5)
    assert out.actions.shape == (11, 2, 8, 3) and set(out.parent_actions) == {"a", "b"}
    # the endpoints of the grid are the parents alone (same initial noise), and the middle differs from both
    torch.testing.assert_close(out.actions[0], out.parent_actions["b"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.actions[-1], out.parent_actions["a"], rtol=1e-4, atol=1e-4)
    middle = out.actions[5]
    assert float((middle - out.actions[0]).abs().max()) > 1e-4 and float((middle - out.actions[-1]).abs().max()) > 1e-4


def test_parents_with_different_horizons_compose_on_the_longer_chunk() -> None:
    short = policy("diffusion", seed=1)  # H = 8
    long_config = dataclasses.replace(tiny_config("dp3"), action_horizon=16)
    torch.manual_seed(2)
    long = make_policy("dp3", long_config, ACTION_NORM, STATE_NORM)
    composer = Composer([short.as_parent("short"), long.as_parent("long")],
                        ComposerConfig(sampler=SAMPLERS["ddim"]))
    enc = composer.encode([observation(short.config), observation(long_config)])
    out = composer.compose(enc, [0.5, 0.5], generator=0)
    assert out.actions.shape == (1, 2, 16, 3)
    assert out.parent_actions["short"].shape == (2, 8, 3) and out.parent_actions["long"].shape == (2, 16, 3)


def test_parents_with_different_action_stats_are_refused_by_the_core() -> None:
    a = policy("diffusion")
    b = make_policy("dp3", tiny_config("dp3"), fit_min_max(RNG.uniform(0.0, 1.0, (60, 3))), STATE_NORM)
    with pytest.raises(IncompatibleParentError, match="normalises actions differently"):
        Composer([a.as_parent("a"), b.as_parent("b")])


class UserDenoiser(nn.Module):
    """A user's own network: predicts something from (x_t, t, encoding) with its own shapes."""

    def __init__(self, horizon: int, dim: int, cond: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(horizon * dim + 1 + cond, 64), nn.Mish(), nn.Linear(64, horizon * dim))
        self.horizon, self.dim = horizon, dim

    def forward(self, x_t, t, encoding):
        flat = torch.cat([x_t.flatten(1), t[:, None] / 100.0, encoding], dim=1)
        return self.net(flat).reshape(-1, self.horizon, self.dim)


@pytest.mark.parametrize("parameterization,convention,sampler", [
    ("epsilon", VPTime.from_scheduler(make_vp_scheduler()), "ddim"),
    ("sample", VPTime.from_scheduler(make_vp_scheduler()), "ddim"),
    ("v_prediction", VPTime.from_scheduler(make_vp_scheduler()), "ddpm"),
    ("flow_velocity", FlowTime(time_scale=1000.0), "flow_euler")])
def test_adapter_plugs_a_user_module_beside_our_policy(parameterization, convention, sampler) -> None:
    torch.manual_seed(0)
    user = ModuleParent("user", UserDenoiser(8, 3, 5), parameterization, convention, action_horizon=8, action_dim=3,
                        normalization=ACTION_NORM, encoder=lambda obs: torch.as_tensor(obs, dtype=torch.float32))
    ours = policy("diffusion")
    composer = Composer([ours.as_parent("rgb"), user], ComposerConfig(sampler=SAMPLERS[sampler]))
    enc = composer.encode([observation(ours.config, batch=2), np.ones((2, 5), dtype=np.float32)])
    out = composer.compose(enc, [0.5, 0.5], generator=1)
    assert out.actions.shape == (1, 2, 8, 3) and bool(torch.isfinite(out.actions).all())


def test_adapter_without_encoder_passes_arrays_and_mappings_as_float_tensors() -> None:
    seen = {}

    def denoiser(x, t, encoding):
        seen.update(encoding)
        return x

    parent = ModuleParent("plain", denoiser, "sample", FlowTime(), 8, 3)
    enc = parent.encode({"goal": np.ones((2, 4)), "ids": np.arange(2)})
    assert enc["goal"].dtype == torch.float32 and enc["ids"].dtype == torch.int64
    out = parent.predict(torch.ones(2, 8, 3, dtype=torch.float64), 0.5, enc)
    assert out.dtype == torch.float64 and torch.equal(seen["ids"], torch.arange(2))
    assert parent.encode(np.zeros((2, 5))).shape == (2, 5)


def test_adapter_reports_a_wrongly_shaped_prediction_and_bad_arguments() -> None:
    bad = ModuleParent("bad", lambda x, t, e: x[:, :4], "epsilon", VPTime.from_scheduler(make_vp_scheduler()),
                       action_horizon=8, action_dim=3)
    with pytest.raises(ValueError, match=r"parent 'bad': denoiser returned \(2, 4, 3\); expected \(2, 8, 3\)"):
        bad.predict(torch.zeros(2, 8, 3), 10.0, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="ModuleParent.parameterization must be one of"):
        ModuleParent("x", lambda *a: a[0], "score", FlowTime(), 8, 3)
    with pytest.raises(ValueError, match="ModuleParent.action_horizon must be an int >= 1; got 0"):
        ModuleParent("x", lambda *a: a[0], "epsilon", FlowTime(), 0, 3)
    nan = ModuleParent("nan", lambda x, t, e: x * float("nan"), "epsilon", VPTime.from_scheduler(make_vp_scheduler()),
                       8, 3, normalization=ActionNormalization())
    with pytest.raises(NonFinitePredictionError, match="'nan'"):
        Composer([nan], ComposerConfig(sampler=SamplerConfig("ddim", 3))).compose([torch.zeros(1, 1)], [1.0], 0)
