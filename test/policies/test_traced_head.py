"""A traced head (``as_parent(trace_head=True)``) predicts exactly what the eager head predicts, at the shipped size."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig
from gpc_ros.compose.errors import IncompatibleParentError
from gpc_ros.graph.host import HostConfig
from gpc_ros.policies import make_policy
from gpc_ros.policies.encoders.observation import random_observation
from gpc_ros.policies.presets import policy_config
from gpc_ros.policies.traced import TracedHead

from .test_compose_integration import ACTION_NORM, STATE_NORM

SHIPPED_KEYS = {"action": [3], "observation.state": [3], "observation.image": [96, 96, 3],
                "observation.pointcloud": [512, 3]}
WAIT_S = 120.0  # generous: the suite must pass on a loaded machine; the wait ends when the traces are made


def assert_same_chunks(got_chunks, want) -> None:
    """Each chunk and each parent's own chunk bit-identical (``torch.equal``) to the reference's."""
    for got, ref in zip(got_chunks, want, strict=True):
        assert torch.equal(got.actions, ref.actions)
        for name, actions in ref.parent_actions.items():
            assert torch.equal(got.parent_actions[name], actions)


def shipped(policy_type: str, seed: int):
    torch.manual_seed(seed)
    return make_policy(policy_type, policy_config(policy_type, "small", SHIPPED_KEYS), ACTION_NORM, STATE_NORM)


@pytest.fixture(scope="module")
def parents():
    return shipped("diffusion", 1), shipped("dp3", 2)


@pytest.mark.parametrize("rows", [1, 3])
def test_traced_prediction_is_bit_identical_to_eager(parents, rows) -> None:
    for policy in parents:
        eager, traced = policy.as_parent("eager"), policy.as_parent("traced", trace_head=True)
        head = traced._denoiser
        encoding = eager.encode(random_observation(policy.config.observation, rows, seed=rows))
        g = torch.Generator().manual_seed(rows)
        x = torch.randn(rows, 16, 3, generator=g)
        assert torch.equal(traced.predict(x, 999.0, encoding), eager.predict(x, 999.0, encoding))  # eager, tracing
        assert head.wait_for_traces(WAIT_S)
        for timestep in (999.0, 500.0, 37.0, 0.0):
            x = torch.randn(rows, 16, 3, generator=g)
            assert torch.equal(traced.predict(x, timestep, encoding), eager.predict(x, timestep, encoding))
        assert head.traces_made == 1 and head.calls_traced == 4  # one trace per input shape, reused at every time


@pytest.mark.parametrize("parallel", [False, True, "auto"])
def test_composed_chunk_is_bit_identical_with_traced_heads(parents, parallel) -> None:
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 10), parallel_parents=parallel, joint_step=False)
    weights = ([0.5, 0.5], [[0.3, 0.7], [1.0, 0.0]])
    chunks = {}
    for trace in (False, True):
        with Composer([p.as_parent(p.policy_type, trace_head=trace) for p in parents], config) as composer:
            if trace:  # first chunks: eager while the traces are made (3 and 4 rows), then traced
                first = [composer.compose(composer.encode(observations), w, generator=3) for w in weights]
                heads = [parent._denoiser for parent in composer.parents]
                assert all(head.wait_for_traces(WAIT_S) for head in heads)
                calls = [head.calls_traced for head in heads]
            chunks[trace] = [composer.compose(composer.encode(observations), w, generator=3) for w in weights]
    assert [head.calls_traced - c for head, c in zip(heads, calls)] == [20, 20]  # 2 chunks x 10 steps, all traced
    for eager, traced, early in zip(chunks[False], chunks[True], first):
        for got in (traced, early):
            assert torch.equal(got.actions, eager.actions)
            for name, actions in eager.parent_actions.items():
                assert torch.equal(got.parent_actions[name], actions)


@pytest.mark.parametrize("parallel,joint", [(True, "auto"), ("auto", "auto"), (False, True)])
def test_joint_step_of_traced_heads_is_bit_identical(parents, parallel, joint) -> None:
    """All parents' heads forked in one traced call per step: the same chunks (and each parent's own chunk)."""
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 10), parallel_parents=parallel)
    weights = ([0.5, 0.5], [[0.3, 0.7], [1.0, 0.0]])
    with Composer([p.as_parent(p.policy_type) for p in parents], replace(config, parallel_parents=False)) as eager:
        want = [eager.compose(eager.encode(observations), w, generator=3) for w in weights]
    config = replace(config, joint_step=joint)
    with Composer([p.as_parent(p.policy_type, trace_head=True) for p in parents], config) as composer:
        joint = composer._joint.head
        first = [composer.compose(composer.encode(observations), w, generator=3) for w in weights]  # eager, tracing
        assert joint.wait_for_traces(WAIT_S)
        again = [composer.compose(composer.encode(observations), w, generator=3) for w in weights]
        assert composer.stats.joint_steps == 40 and composer.stats.parallel_steps == 0
        assert composer.stats.sequential_steps == 0
        if parallel:  # joint_encode "auto": the encoders in one call too (their trace done before exit)
            assert composer.stats.joint_encodes == 4 and composer.joint_encoder.wait_for_traces(WAIT_S)
    assert joint.calls_traced == 20 and joint.traces_made == 2  # 3 and 4 rows: one trace each
    assert all(parent._denoiser.calls_traced == parent._denoiser.calls_eager == 0 for parent in composer.parents)
    assert "prim::fork" in str(next(iter(joint._traces.values())).graph)  # the second head is forked in the trace
    for got_chunks in (first, again):
        assert_same_chunks(got_chunks, want)


def test_joint_step_of_three_traced_parents_is_bit_identical(parents) -> None:
    """K = 3: two heads forked, one on the calling thread; the chunk equals the eager Composer's."""
    policies = [*parents, shipped("diffusion", 13)]
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(policies)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 4), return_parent_chunks=False, joint_step=True)
    with Composer([p.as_parent(f"{p.policy_type}{i}") for i, p in enumerate(policies)],
                  replace(config, joint_step=False)) as eager:
        want = eager.compose(eager.encode(observations), [0.2, 0.3, 0.5], generator=4)
    traced = [p.as_parent(f"{p.policy_type}{i}", trace_head=True) for i, p in enumerate(policies)]
    with Composer(traced, config) as composer:
        assert composer._joint.head.wait_for_traces(WAIT_S) and composer._joint.head.traces_made == 0
        composer.compose(composer.encode(observations), [0.2, 0.3, 0.5], generator=4)  # eager, tracing
        assert composer._joint.head.wait_for_traces(WAIT_S)
        got = composer.compose(composer.encode(observations), [0.2, 0.3, 0.5], generator=4)
        assert composer._joint.head.calls_traced == 4 and composer.stats.joint_steps == 8
    assert torch.equal(got.actions, want.actions)


def test_too_few_inter_op_threads_are_raised_or_logged(parents, monkeypatch, caplog) -> None:
    """forked_heads asks torch for K - 1 inter-op threads; torch refuses once inter-op work started: a warning."""
    from gpc_ros.policies.traced import forked_heads

    heads = [TracedHead(p.unet.eval()) for p in parents]
    asked = []

    def refuse(n: int) -> None:
        asked.append(n)
        raise RuntimeError("Error: cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(torch, "get_num_interop_threads", lambda: 0)
    monkeypatch.setattr(torch, "set_num_interop_threads", refuse)
    with caplog.at_level(logging.WARNING, logger="gpc_ros.policies.traced"):
        joint = forked_heads(heads)
    assert asked == [1] and "0 inter-op thread(s) for 1 forked heads and cannot be given more" in caplog.text
    x, t = torch.randn(1, 16, 3), torch.full((1,), 3.0)
    cs = [torch.randn(1, p.encoding_dim) for p in parents]
    with torch.no_grad():
        got = joint(x, t, cs[0], x, t, cs[1])  # eager (tracing in the background): the heads' own predictions
        assert joint.wait_for_traces(WAIT_S)
        assert all(torch.equal(g, p.unet(x, t, c)) for g, p, c in zip(got, parents, cs))


def test_joint_step_only_when_every_parent_is_called_and_allowed(parents) -> None:
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]
    base = ComposerConfig(sampler=SamplerConfig("ddim", 4), return_parent_chunks=False)
    traced = [p.as_parent(p.policy_type, trace_head=True) for p in parents]
    assert Composer(traced, base)._joint is None  # "auto" with parallel_parents False: one after the other
    assert Composer(traced, replace(base, parallel_parents=True, joint_step=False))._joint is None
    assert Composer([p.as_parent(p.policy_type) for p in parents], replace(base, parallel_parents=True))._joint is None
    assert Composer(traced[:1], replace(base, parallel_parents=True))._joint is None
    with Composer(traced, replace(base, parallel_parents=True)) as composer:
        with_zero = composer.compose(composer.encode(observations), [1.0, 0.0], generator=1)  # pcd not called
        assert composer.stats.joint_steps == 0 and composer.stats.sequential_steps == 0
    with Composer([p.as_parent(p.policy_type) for p in parents], base) as eager:
        want = eager.compose(eager.encode(observations), [1.0, 0.0], generator=1)
    assert torch.equal(with_zero.actions, want.actions)


def test_joint_step_retraces_after_weights_change_in_place(parents) -> None:
    policies = [shipped("diffusion", 11), shipped("dp3", 12)]
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(policies)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 4), return_parent_chunks=False, parallel_parents=True)
    with Composer([p.as_parent(p.policy_type, trace_head=True) for p in policies], config) as composer:
        composer.compose(composer.encode(observations), [0.5, 0.5], generator=2)
        assert composer._joint.head.wait_for_traces(WAIT_S)
        policies[1].load_state_dict(parents[1].state_dict())  # copies in place: the dp3 head's weights change
        composer.compose(composer.encode(observations), [0.5, 0.5], generator=2)  # eager while retracing
        assert composer._joint.head.wait_for_traces(WAIT_S)
        got = composer.compose(composer.encode(observations), [0.5, 0.5], generator=2)
        assert composer._joint.head.traces_made == 2 and not composer._joint.head.check_every_call  # per chunk
    with Composer([p.as_parent(p.policy_type) for p in policies], replace(config, parallel_parents=False)) as eager:
        want = eager.compose(eager.encode(observations), [0.5, 0.5], generator=2)
    assert torch.equal(got.actions, want.actions)


@pytest.mark.parametrize("background", [False, True])
def test_weights_changed_in_place_are_retraced(parents, caplog, background) -> None:
    policy = shipped("dp3", 5)
    head = TracedHead(policy.unet.eval(), background=background)
    x, t, c = torch.randn(2, 16, 3), torch.full((2,), 10.0), torch.randn(2, policy.encoding_dim)
    with torch.no_grad():
        head(x, t, c)
        assert head.wait_for_traces(WAIT_S)
        policy.load_state_dict(parents[1].state_dict())  # copies in place: version counters move
        with caplog.at_level(logging.INFO, logger="gpc_ros.policies.traced"):
            got = head(x, t, c)
            assert head.wait_for_traces(WAIT_S)
            again = head(x, t, c)
        want = parents[1].unet(x, t, c)
        assert torch.equal(got, want) and torch.equal(again, want)
    assert head.traces_made == 2 and head.calls_traced == (3 if not background else 1)
    assert "weights changed in place" in caplog.text


def test_weights_checked_only_when_asked_without_check_every_call(parents) -> None:
    """``check_every_call=False`` (the joint step: once per chunk): a change is noticed at ``check_weights``."""
    policy = shipped("dp3", 9)
    head = TracedHead(policy.unet.eval(), background=False, check_every_call=False)
    x, t, c = torch.randn(2, 16, 3), torch.full((2,), 10.0), torch.randn(2, policy.encoding_dim)
    with torch.no_grad():
        head(x, t, c)
        policy.load_state_dict(parents[1].state_dict())
        head(x, t, c)  # the old trace (which shares some of the weights' storage: no defined result)
        assert head.traces_made == 1 and head.calls_traced == 2  # the counters are not read at the call
        head.check_weights()
        assert torch.equal(head(x, t, c), parents[1].unet(x, t, c)) and head.traces_made == 2  # retraced


def test_a_failed_background_trace_is_raised_by_the_next_call(monkeypatch) -> None:
    policy = shipped("dp3", 8).eval()
    head = TracedHead(policy.unet)

    def broken(*args, **kwargs):
        raise ValueError("no trace today")

    monkeypatch.setattr(torch.jit, "trace", broken)
    x, t, c = torch.randn(1, 16, 3), torch.full((1,), 1.0), torch.randn(1, policy.encoding_dim)
    with torch.no_grad():
        head(x, t, c)
        assert head.wait_for_traces(WAIT_S)
        with pytest.raises(RuntimeError, match="tracing the head of ConditionalUnet1D failed") as info:
            head(x, t, c)
    assert isinstance(info.value.__cause__, ValueError)


def test_training_mode_and_gradients_run_eagerly() -> None:
    policy = shipped("diffusion", 6)
    head = TracedHead(policy.unet, background=False)
    x, t, c = torch.randn(1, 16, 3), torch.full((1,), 3.0), torch.randn(1, policy.encoding_dim)
    out = head(x, t, c)  # gradients on, training mode
    assert out.requires_grad and head.traces_made == 0
    policy.eval()
    head(x, t, c)  # gradients still on
    assert head.traces_made == 0 and head.calls_eager == 2


def test_at_most_max_traces_are_kept() -> None:
    policy = shipped("dp3", 7).eval()
    head = TracedHead(policy.unet, max_traces=2, background=False)
    with torch.no_grad():
        for rows in (1, 2, 3, 1):
            head(torch.randn(rows, 16, 3), torch.full((rows,), 1.0), torch.randn(rows, policy.encoding_dim))
    assert head.traces_made == 4 and len(head._traces) == 2


@pytest.mark.parametrize("make,error,match", [
    (lambda: shipped("dp3", 0).as_parent("p", trace_head="yes"), TypeError,
     r"as_parent: trace_head must be True or False; got 'yes'"),
    (lambda: TracedHead(lambda x, t, c: x), TypeError, r"TracedHead.module must be a torch.nn.Module; got function"),
    (lambda: TracedHead(torch.nn.Identity(), max_traces=0), ValueError,
     r"TracedHead.max_traces must be an int >= 1; got 0"),
    (lambda: TracedHead(torch.nn.Identity(), background=1), TypeError,
     r"TracedHead.background must be True or False; got 1"),
    (lambda: HostConfig(name="a", checkpoint="x", trace_head="on"), ValueError,
     r"HostConfig.trace_head must be true or false; got 'on'"),
    (lambda: HostConfig(name="a", factory="m:f", modality="state", trace_head=True), ValueError,
     r"HostConfig.trace_head applies to checkpoint parents only .*factory='m:f'"),
    (lambda: TracedHead(torch.nn.Identity(), check_every_call="no"), TypeError,
     r"TracedHead.check_every_call must be True or False; got 'no'"),
    (lambda: ComposerConfig(joint_step="always"), ValueError,
     r"ComposerConfig.joint_step must be True, False or 'auto'; got 'always'"),
    (lambda: Composer([shipped("dp3", 0).as_parent("a"), shipped("dp3", 1).as_parent("b")],
                      ComposerConfig(joint_step=True)), IncompatibleParentError,
     r"ComposerConfig.joint_step=True needs two or more parents that offer a joint step together .*"
     r"parents \['a', 'b'\] \(ModuleParent, ModuleParent\) offer none"),
])
def test_bad_settings_are_refused_with_the_field_and_the_value(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_joint_encode_setting_is_checked() -> None:
    with pytest.raises(ValueError, match=r"ComposerConfig.joint_encode must be True, False or 'auto'; got 'always'"):
        ComposerConfig(joint_encode="always")
    with pytest.raises(IncompatibleParentError, match=r"ComposerConfig.joint_encode=True needs two or more parents "
                       r"that offer a joint encode together .*parents \['a', 'b'\] \(ModuleParent, ModuleParent\) "
                       r"offer none"):
        Composer([shipped("dp3", 0).as_parent("a"), shipped("dp3", 1).as_parent("b")],
                 ComposerConfig(joint_encode=True))


@pytest.mark.parametrize("parallel,joint", [(True, "auto"), (False, True)])
def test_joint_encode_of_traced_parents_is_bit_identical(parents, parallel, joint) -> None:
    """All parents' encoder modules forked in one traced call per chunk: the same encodings and chunks."""
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 10), parallel_parents=False, joint_step=False,
                            joint_encode=False)
    weights = ([0.5, 0.5], [[0.3, 0.7], [1.0, 0.0]])
    with Composer([p.as_parent(p.policy_type) for p in parents], config) as eager:
        want_enc = eager.encode(observations)
        want = [eager.compose(want_enc, w, generator=3) for w in weights]
    config = replace(config, parallel_parents=parallel, joint_step=joint, joint_encode=joint)
    with Composer([p.as_parent(p.policy_type, trace_head=True) for p in parents], config) as composer:
        joint_encode = composer.joint_encoder
        first = composer.encode(observations)  # eager, tracing
        assert joint_encode.wait_for_traces(WAIT_S) and composer._joint.head.wait_for_traces(WAIT_S)
        (encoder,) = joint_encode._joint.values()
        again = composer.encode(observations)
        chunks = [composer.compose(again, w, generator=3) for w in weights]
        assert composer.stats.joint_encodes == 2
    assert encoder.calls_eager == 1 and encoder.calls_traced == 1 and encoder.traces_made == 1
    assert "prim::fork" in str(next(iter(encoder._traces.values())).graph)  # the second encoder is forked
    for got in (first, again):
        assert all(torch.equal(g, e) for g, e in zip(got, want_enc, strict=True))
    assert_same_chunks(chunks, want)


def test_joint_encode_of_three_traced_parents_is_bit_identical(parents) -> None:
    """K = 3: two encoders forked, one on the calling thread; encodings and chunk equal the eager Composer's."""
    policies = [*parents, shipped("diffusion", 13)]
    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(policies)]
    config = ComposerConfig(sampler=SamplerConfig("ddim", 4), return_parent_chunks=False, joint_step=True,
                            joint_encode=True)
    with Composer([p.as_parent(f"{p.policy_type}{i}") for i, p in enumerate(policies)],
                  replace(config, joint_step=False, joint_encode=False)) as eager:
        want_enc = eager.encode(observations)
        want = eager.compose(want_enc, [0.2, 0.3, 0.5], generator=4)
    traced = [p.as_parent(f"{p.policy_type}{i}", trace_head=True) for i, p in enumerate(policies)]
    with Composer(traced, config) as composer:
        composer.encode(observations)  # eager, tracing
        assert composer.joint_encoder.wait_for_traces(WAIT_S)
        got_enc = composer.encode(observations)
        got = composer.compose(got_enc, [0.2, 0.3, 0.5], generator=4)
        assert composer._joint.head.wait_for_traces(WAIT_S)
    (encoder,) = composer.joint_encoder._joint.values()
    assert encoder.calls_traced == 1
    graph = next(iter(encoder._traces.values())).graph
    assert sum(node.kind() == "prim::fork" for node in graph.nodes()) == 2  # two encoders forked
    assert all(torch.equal(g, e) for g, e in zip(got_enc, want_enc, strict=True))
    assert torch.equal(got.actions, want.actions)


def test_joint_encode_falls_back_to_each_parents_encode(parents) -> None:
    """Parents that cannot join (an eager head, an encoder that is one callable, fewer than two) encode one after
    the other with "auto"; an encoder in training mode makes the joint encode call each parent's encode."""
    from gpc_ros.policies import ModuleParent

    observations = [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]
    base = ComposerConfig(sampler=SamplerConfig("ddim", 4), parallel_parents=True)
    eager = [p.as_parent(p.policy_type) for p in parents]
    want = [p.encode(o) for p, o in zip(eager, observations)]
    traced = [p.as_parent(p.policy_type, trace_head=True) for p in parents]
    one_callable = ModuleParent("one", traced[1]._denoiser, traced[1].parameterization, traced[1].time_convention,
                                16, 3, traced[1].normalization, encoder=parents[1].encode)
    for plain in (eager, [traced[0], one_callable], traced[:1]):
        with Composer(plain, base) as composer:
            assert composer.joint_encoder is None and composer.stats.joint_encodes == 0
            got = composer.encode(observations[:len(plain)])
            assert all(torch.equal(g, e) for g, e in zip(got, want, strict=False))
    assert Composer(traced, replace(base, joint_encode=False)).joint_encoder is None
    assert Composer(traced, replace(base, parallel_parents=False)).joint_encoder is None  # "auto": as joint_step
    with Composer(traced, base) as composer:
        parents[1].observation_encoder.train()
        try:
            got = composer.encode(observations)
            want = [p.encode(o) for p, o in zip(eager, observations)]
        finally:
            parents[1].observation_encoder.eval()
        assert composer.joint_encoder._joint == {}  # nothing traced
    assert all(torch.equal(g, e) for g, e in zip(got, want))
