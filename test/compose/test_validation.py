"""Bad input never produces a chunk: each case raises a clear error naming the offending parent or field."""

from __future__ import annotations

import pytest
import torch

from gpc_ros.compose import (
    ActionNormalization,
    Composer,
    ComposerConfig,
    FlowTime,
    IncompatibleParentError,
    InvalidPredictionError,
    InvalidWeightsError,
    NonFinitePredictionError,
    SamplerConfig,
    VPTime,
    make_vp_scheduler,
)
from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.compose.warm_start import WarmStart, WarmStartConfig

H, D = 4, 2
VP = VPTime.from_scheduler(make_vp_scheduler())
NORM = ActionNormalization.min_max([-1.0, -2.0], [1.0, 2.0])


def parent(name: str, **kw) -> GaussianParent:
    args = dict(parameterization="epsilon", time_convention=VP, action_horizon=H, action_dim=D, var=0.1,
                normalization=NORM)
    args.update(kw)
    return GaussianParent(name, **args)


def composer(*parents, **config) -> Composer:
    return Composer(list(parents), ComposerConfig(sampler=SamplerConfig("ddim", 3), **config))


def encodings(c: Composer, b: int = 2) -> list[torch.Tensor]:
    return c.encode([torch.zeros(b, p.action_horizon, D) for p in c.parents])


@pytest.mark.parametrize("weights,match,offender", [
    ((0.7, 0.7), r"convex operator: weights of candidate 0 \(rgb=0.7, pcd=0.7\) sum to 1.4, not 1", None),
    ([[0.5, 0.5], [0.2, 0.3]], r"candidate 1 \(rgb=0.2, pcd=0.3\) sum to 0.5", None),
    ((1.2, -0.2), r"weight of parent 'pcd' in candidate 0 is negative \(-0.2\)", "pcd"),
    ((float("nan"), 1.0), r"weight of parent 'rgb' in candidate 0 is not finite", "rgb"),
    ((1.0,), r"K = 2 for parents \['rgb', 'pcd'\]; got shape \(1, 1\)", None),
])
def test_bad_weights_are_refused(weights, match: str, offender: str | None) -> None:
    c = composer(parent("rgb"), parent("pcd"))
    with pytest.raises(InvalidWeightsError, match=match) as err:
        c.compose(encodings(c), weights, generator=0)
    assert err.value.parent == offender


def test_mixture_refuses_negative_weights_and_linear_needs_the_flag_to_extrapolate() -> None:
    mix = composer(parent("rgb"), parent("pcd"), operator="mixture")
    with pytest.raises(InvalidWeightsError, match="mixture operator: weight of parent 'rgb'"):
        mix.compose(encodings(mix), (-0.5, 1.5))
    linear = composer(parent("rgb"), parent("pcd"), operator="linear")
    linear.compose(encodings(linear), (1.5, -0.5), generator=0)  # CFG-style: allowed, sums to 1
    with pytest.raises(InvalidWeightsError, match="sum to 2"):
        linear.compose(encodings(linear), (1.0, 1.0))
    extrapolating = composer(parent("rgb"), parent("pcd"), operator="linear", allow_unnormalized_weights=True)
    assert torch.isfinite(extrapolating.compose(encodings(extrapolating), (1.0, 1.0), generator=0).actions).all()
    with pytest.raises(ValueError, match="allow_unnormalized applies only to operator 'linear'"):
        ComposerConfig(operator="convex", allow_unnormalized_weights=True)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_prediction_names_the_parent_and_step(bad_value: float) -> None:
    c = composer(parent("rgb"), parent("broken"))
    enc = encodings(c)
    enc[1] = torch.full_like(enc[1], bad_value)  # the broken parent's observation poisons its prediction
    with pytest.raises(NonFinitePredictionError, match=r"parent 'broken' returned \d+ NaN/inf value\(s\) at step 0") \
            as err:
        c.compose(enc, (0.5, 0.5), generator=0)
    assert err.value.parent == "broken"


def test_non_finite_prediction_of_a_zero_weight_parent_still_fails_when_its_own_chunk_is_requested() -> None:
    c = composer(parent("rgb"), parent("broken", var=float("nan")))
    with pytest.raises(NonFinitePredictionError, match="'broken'"):
        c.compose(encodings(c), (1.0, 0.0), generator=0)


def test_wrong_prediction_shape_names_the_parent() -> None:
    class Truncating(GaussianParent):
        def predict(self, x_t, timestep, encoding):
            return super().predict(x_t, timestep, encoding)[:, :-1]

    c = composer(parent("rgb"), Truncating("short", "epsilon", VP, H, D, 0.1, NORM))
    with pytest.raises(InvalidPredictionError, match=r"parent 'short' returned a prediction of shape \(6, 3, 2\)"):
        c.compose(encodings(c, b=2), (0.5, 0.5))


def test_a_prediction_that_is_not_a_tensor_has_its_own_error_naming_the_type() -> None:
    class ReturnsNumpy(GaussianParent):
        def predict(self, x_t, timestep, encoding):
            return super().predict(x_t, timestep, encoding).numpy()

    c = composer(parent("rgb"), ReturnsNumpy("numpy", "epsilon", VP, H, D, 0.1, NORM))
    with pytest.raises(InvalidPredictionError, match=r"parent 'numpy' returned a numpy.ndarray at step 0 .*"
                                                     r"must return a torch.Tensor of shape \(6, 4, 2\)") as err:
        c.compose(encodings(c, b=2), (0.5, 0.5), generator=0)
    assert err.value.parent == "numpy" and not isinstance(err.value, NonFinitePredictionError)


@pytest.mark.parametrize("sampler", ["ddim", "flow_euler"])
def test_a_flow_velocity_parent_on_a_vp_time_is_refused_by_name(sampler: str) -> None:
    """v = eps - x0 inverts to (eps, x0) only where alpha + sigma = 1; on a VP table it would be silently wrong."""
    flow_on_vp = parent("pi0", parameterization="flow_velocity", time_convention=VP)
    with pytest.raises(IncompatibleParentError, match=r"parent 'pi0' predicts 'flow_velocity', which is defined only "
                                                      r"on a rectified-flow time .* VPTime") as err:
        Composer([parent("rgb"), flow_on_vp], ComposerConfig(sampler=SamplerConfig(sampler, 3, flow_t_start=0.9)))
    assert err.value.parent == "pi0"
    Composer([parent("rgb"), parent("pi0", parameterization="flow_velocity", time_convention=FlowTime())],
             ComposerConfig(sampler=SamplerConfig(sampler, 3, flow_t_start=0.9)))  # the right pair is accepted


def test_mismatched_action_dim_names_the_parent() -> None:
    with pytest.raises(IncompatibleParentError, match="parent 'pcd' has action_dim 3 but parent 'rgb' has 2") as err:
        composer(parent("rgb"), parent("pcd", action_dim=3, normalization=ActionNormalization()))
    assert err.value.parent == "pcd"


def test_mismatched_normalization_names_the_parent() -> None:
    other = ActionNormalization.min_max([-1.0, -2.5], [1.0, 2.0])
    with pytest.raises(IncompatibleParentError, match="parent 'pcd' normalises actions differently") as err:
        composer(parent("rgb"), parent("pcd", normalization=other))
    assert err.value.parent == "pcd"
    with pytest.raises(IncompatibleParentError, match="parent 'pcd' normalises actions differently"):
        composer(parent("rgb"), parent("pcd", normalization=ActionNormalization.mean_std([0, 0], [1, 2])))


def test_normalization_stats_of_the_wrong_dimension_name_the_parent() -> None:
    with pytest.raises(IncompatibleParentError, match="parent 'rgb': normalization stats have 3 dims"):
        composer(parent("rgb", normalization=ActionNormalization.min_max([0, 0, 0], [1, 1, 1])))


def test_unknown_parameterization_names_the_parent() -> None:
    weird = parent("pcd")
    weird.parameterization = "score"
    with pytest.raises(IncompatibleParentError, match=r"parent 'pcd' parameterization must be one of .*got 'score'"):
        composer(parent("rgb"), weird)


def test_duplicate_names_and_missing_time_convention_are_refused() -> None:
    with pytest.raises(IncompatibleParentError, match="two parents are named 'rgb'"):
        composer(parent("rgb"), parent("rgb"))
    with pytest.raises(IncompatibleParentError, match="parent 'pcd': time_convention must be a TimeConvention"):
        composer(parent("rgb"), parent("pcd", time_convention=None))


def test_encodings_must_match_parents_and_batch() -> None:
    c = composer(parent("rgb"), parent("pcd"))
    with pytest.raises(ValueError, match=r"2 encodings \(one per parent \['rgb', 'pcd'\]\); got 1"):
        c.compose(encodings(c)[:1], (0.5, 0.5))
    enc = encodings(c)
    enc[1] = enc[1][:1]
    with pytest.raises(ValueError, match="encoding of parent 'pcd' has batch size 1, parent 'rgb' has 2"):
        c.compose(enc, (0.5, 0.5))


def test_unnormalized_weights_on_a_flow_grid_starting_at_pure_noise_are_refused() -> None:
    flow = dict(time_convention=FlowTime(), parameterization="flow_velocity")
    c = Composer([parent("rgb", **flow), parent("pcd", **flow)],
                 ComposerConfig(operator="linear", allow_unnormalized_weights=True,
                                sampler=SamplerConfig("flow_euler", 4)))
    with pytest.raises(InvalidWeightsError, match="alpha > 0"):
        c.compose(encodings(c), (1.0, 1.0))


@pytest.mark.parametrize("make,match", [
    (lambda: SamplerConfig("euler"), r"SamplerConfig.kind must be one of .*got 'euler'"),
    (lambda: SamplerConfig("ddim", 0), r"SamplerConfig.num_inference_steps must be an int >= 1; got 0"),
    (lambda: SamplerConfig("ddim", 200), r"num_inference_steps must be <= num_train_timesteps \(100\); got 200"),
    (lambda: SamplerConfig("flow_euler", flow_t_start=1.5), r"flow_t_start must be in \(0, 1\]; got 1.5"),
    (lambda: ComposerConfig(operator="and"), r"operator must be one of \['convex', 'linear', 'mixture'\]; got 'and'"),
    (lambda: ComposerConfig(dtype="float16"), r"ComposerConfig.dtype must be one of .*got 'float16'"),
    (lambda: ComposerConfig(parallel_parents="yes"), r"parallel_parents must be True, False or 'auto'; got 'yes'"),
    (lambda: WarmStartConfig(remaining_fraction=0.0), r"remaining_fraction must be in \(0, 1\]; got 0.0"),
    (lambda: ActionNormalization.min_max([0.0], [0.0]), r"scale must be finite and > 0"),
])
def test_config_errors_name_field_allowed_values_and_value(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_epsilon_parent_on_a_flow_grid_from_pure_noise_is_refused_up_front() -> None:
    with pytest.raises(IncompatibleParentError, match="parent 'rgb' predicts epsilon.*flow_t_start < 1") as err:
        Composer([parent("rgb")], ComposerConfig(sampler=SamplerConfig("flow_euler", 4)))
    assert err.value.parent == "rgb"
    c = Composer([parent("rgb")], ComposerConfig(sampler=SamplerConfig("flow_euler", 4, flow_t_start=0.999)))
    assert torch.isfinite(c.compose(encodings(c), [1.0], generator=0).actions).all()


def test_warm_start_of_the_wrong_shape_is_refused() -> None:
    c = composer(parent("rgb"), parent("pcd"))
    with pytest.raises(ValueError, match=r"WarmStart.previous_normalized must be \(B, H, D\) = \(2, 4, 2\)"):
        c.compose(encodings(c), (0.5, 0.5), warm_start=WarmStart(torch.zeros(2, 3, 2), executed_steps=1))
    with pytest.raises(ValueError, match=r"WarmStart.executed_steps must be in \[0, H=4\); got 4"):
        WarmStart(torch.zeros(2, 4, 2), executed_steps=4)
