"""The graph's cores without ROS: the exchange's packing, the composer over hosts (in process and over the packed
wire format) against the plain Composer, the fault policies and recovery, refused observations, weights at 0.

The remote handle here is fed by an in-memory transport that packs and unpacks every message exactly as the ROS
nodes do (the DDS hop itself is covered by test_graph_nodes.py with real processes)."""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from gpc_ros.compose import Composer
from gpc_ros.graph import protocol
from gpc_ros.graph.composition import (
    ComposerNodeConfig,
    GraphComposer,
    LocalHost,
    LocalJointStep,
    RemoteHost,
)
from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent
from gpc_ros.graph.parents import GoalParent
from gpc_ros.testing.spin import wait_until

DATA = "test/policies/data"
T0 = 1000.0
GENEROUS_S = 60.0  # bounded waits that end as soon as the reply is in
READY_S = 120.0  # a spinning worker's start-up (a new interpreter importing torch) on a loaded machine


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fill(core: HostCore, t_s: float, seed: int = 0, frames: int = 3, period_s: float = 0.1) -> None:
    """Observations up to ``t_s`` (frames every ``period_s``) with the shapes the core's parent wants."""
    rng = np.random.default_rng(seed)
    o = core.observing
    for k in range(frames):
        ts = t_s - period_s * (frames - 1 - k)
        core.window.add_state(ts, rng.uniform(0.3, 0.6, 3))
        if o.modality == "image":
            core.window.add_frame(ts, rng.integers(0, 256, (o.image_size, o.image_size, 3), dtype=np.uint8))
        elif o.modality == "pointcloud":
            core.window.add_frame(ts, rng.uniform(-0.3, 0.6, (o.num_points, 3)).astype(np.float32))


def checkpoint_cores(trace_head: bool = False) -> list[HostCore]:
    cores = []
    for name, folder in (("rgb", "diffusion_rgb"), ("pcd", "flow_pointcloud")):
        parent, observing = load_host_parent(HostConfig(name=name, checkpoint=f"{DATA}/{folder}",
                                                        trace_head=trace_head))
        cores.append(HostCore(parent, observing))
    for i, core in enumerate(cores):
        fill(core, T0, seed=i)
    return cores


def goal_cores() -> list[HostCore]:
    from gpc_ros.graph.host import Observing

    observing = Observing("state", 1, 3)
    cores = [HostCore(GoalParent("left", [0.65, 0.12, 0.44]), observing),
             HostCore(GoalParent("right", [0.65, -0.12, 0.44], "flow_velocity", "flow"), observing)]
    for core in cores:
        core.window.add_state(T0, np.array([0.55, 0.0, 0.52]))
    return cores


def wire(cores: list[HostCore]) -> list[RemoteHost]:
    """Remote handles whose requests and replies go through pack/unpack (replies on another thread)."""
    handles: dict[str, RemoteHost] = {}

    def make_send(core: HostCore):
        def send(request: protocol.Exchange) -> None:
            received = protocol.Exchange.unpack(request.pack(), request.tensor.shape)
            answer = core.answer(received)
            threading.Thread(target=lambda: handles[core.name].deliver(
                protocol.Exchange.unpack(answer.pack(), answer.tensor.shape))).start()
        return send

    for core in cores:
        handles[core.name] = RemoteHost(core.name, make_send(core))
        handles[core.name].announce(core.announcement())
    return list(handles.values())


def test_exchange_packs_float32_tensors_and_every_header_field_exactly() -> None:
    x = torch.randn(11, 8, 3, generator=torch.Generator().manual_seed(0)).numpy()
    request = protocol.predict_request(2**40 + 3, 7, 17.0, (1796160955, 123456789), x)
    back = protocol.Exchange.unpack(request.pack(), x.shape)
    assert (back.kind, back.correlation_id, back.step, back.value, back.stamp_sec, back.stamp_nsec) == (
        protocol.KIND_PREDICT, 2**40 + 3, 7, 17.0, 1796160955, 123456789)
    assert back.tensor.dtype == np.float32 and np.array_equal(back.tensor, x)
    with pytest.raises(ValueError, match="layout says"):
        protocol.Exchange.unpack(request.pack(), (11, 8, 4))


def assert_plain_composers_chunk(cores, config: ComposerNodeConfig, result, seed: int) -> tuple[Composer, list]:
    """The graph's chunk (and each parent's) equals the plain in-process Composer's at weights (0.3, 0.7), ``seed``."""
    reference = Composer([c.parent for c in cores], replace(config.composer, parallel_parents=False))
    observations = [c.window.at(T0 + 0.01)[0] for c in cores]
    expected = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                                 generator=seed)
    assert torch.equal(result.actions, expected.actions[0, 0])
    for name in ("rgb", "pcd"):
        assert torch.equal(result.parent_actions[name], expected.parent_actions[name][0])
    return reference, observations


@pytest.mark.parametrize("deployment,parallel_parents", [
    ("in_process", "auto"), ("in_process", True), ("in_process", False), ("wire", "auto")])
def test_graph_chunk_equals_the_plain_composers_for_the_same_seed(deployment, parallel_parents) -> None:
    """In process with the parents in threads, one after the other or "auto" (both in the first chunk: it
    alternates while it measures), and over the wire: the plain sequential Composer's chunk."""
    cores = checkpoint_cores()
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, encode_timeout_s=GENEROUS_S,
                                step_timeout_s=GENEROUS_S)
    config = replace(config, composer=replace(config.composer, parallel_parents=parallel_parents))
    handles = [LocalHost(c) for c in cores] if deployment == "in_process" else wire(cores)
    graph = GraphComposer(config, handles)
    result = graph.compose(T0 + 0.01)
    assert result.mode == "normal", result.reason
    reference, observations = assert_plain_composers_chunk(cores, config, result, 5)
    # the next chunk uses the next seed
    second = graph.compose(T0 + 0.01)
    again = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                              generator=6)
    assert torch.equal(second.actions, again.actions[0, 0])
    (composer, *_), = graph._composers.values()
    stats = composer.stats
    if deployment == "wire":  # split-phase: neither threads nor one after the other
        assert (stats.parallel_steps, stats.sequential_steps) == (0, 0)
    elif parallel_parents == "auto":
        assert stats.parallel_steps >= 3 and stats.sequential_steps >= 3
    else:
        assert (stats.parallel_steps > 0, stats.sequential_steps > 0) == (parallel_parents, not parallel_parents)
    graph.close()
    reference.close()


@pytest.mark.parametrize("deployment,joint_step", [("in_process", "auto"), ("in_process", False), ("wire", "auto")])
def test_hosts_with_traced_heads_give_the_eager_composers_chunk(deployment, joint_step) -> None:
    """``trace_head: true`` hosts: the first chunk (answered eagerly while the traces are made) and the next one
    (traced) are the plain eager Composer's chunks for their seeds. In process, by default (``joint_step: auto``)
    both hosts' heads run in one traced call per step; with ``joint_step`` False each host's own trace."""
    cores = checkpoint_cores(trace_head=True)
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, encode_timeout_s=GENEROUS_S,
                                step_timeout_s=GENEROUS_S)
    config = replace(config, composer=replace(config.composer, joint_step=joint_step))
    graph = GraphComposer(config, [LocalHost(c) for c in cores] if deployment == "in_process" else wire(cores))
    first = graph.compose(T0 + 0.01)
    (composer, *_), = graph._composers.values()
    joint = deployment == "in_process" and joint_step == "auto"
    heads = [composer._joint.inner.head] if joint else [c.parent._denoiser for c in cores]
    assert all(head.wait_for_traces(GENEROUS_S) for head in heads)
    before = [head.calls_traced for head in heads]
    second = graph.compose(T0 + 0.01)
    assert [head.calls_traced - b for head, b in zip(heads, before)] == [10] * len(heads)  # every step traced
    assert composer.stats.joint_steps == (20 if joint else 0)
    if composer.joint_encoder is not None:  # in process: the encoders in one call too (joint_encode "auto")
        assert composer.stats.joint_encodes == 2 and composer.joint_encoder.inner.wait_for_traces(GENEROUS_S)
    eager = checkpoint_cores()
    reference, observations = assert_plain_composers_chunk(eager, config, first, 5)
    again = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                              generator=6)
    assert torch.equal(second.actions, again.actions[0, 0])
    graph.close()
    reference.close()


def head_workers() -> list[multiprocessing.Process]:
    """The live spinning head workers (``composer.joint_step_workers``) this process started."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("gpc-head-")]


def test_in_process_hosts_with_spinning_workers_give_the_eager_composers_chunk() -> None:
    """``composer.joint_step_workers: true``, hosts in the composer's process with traced heads: the second host's
    head runs in a spinning worker process. ``check_compatible`` starts the worker the chunks then use (one, not
    one per check or chunk); the first chunk (its steps in process while the worker starts, or in the worker) and
    the next one (every step in the worker) and each parent's own chunk are the plain eager sequential Composer's
    for their seeds; a one-parent chunk (the other's weight 0) needs no worker; ``close()`` stops the worker."""
    from gpc_ros.policies.spin_worker import SpinningHeadsStep

    before = {p.pid for p in head_workers()}
    cores = checkpoint_cores(trace_head=True)
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, deployment="in_process",
                                encode_timeout_s=GENEROUS_S, step_timeout_s=GENEROUS_S)
    config = replace(config, composer=replace(config.composer, joint_step_workers=True))
    graph = GraphComposer(config, [LocalHost(c) for c in cores])
    graph.check_compatible()
    (composer, *_), = graph._composers.values()
    step = composer._joint
    assert isinstance(step, LocalJointStep) and isinstance(step.inner, SpinningHeadsStep)
    pids = [w.process.pid for w in step.inner.workers]
    assert len(pids) == 1 and {p.pid for p in head_workers()} - before == set(pids)
    first = graph.compose(T0 + 0.01)
    assert first.mode == "normal", first.reason
    assert step.inner.wait_ready(READY_S)
    assert step.inner.head.wait_for_traces(GENEROUS_S)  # head 1's trace, on the composing thread
    step.inner.reset_stats()
    second = graph.compose(T0 + 0.01)
    assert (step.inner.worker_steps, step.inner.fallback_steps) == (10, 0)  # head 2 in the worker at every step
    assert [c for c, *_ in graph._composers.values()] == [composer]  # the checked composer, no other
    assert {p.pid for p in head_workers()} - before == set(pids)
    eager = checkpoint_cores()
    plain = replace(config.composer, joint_step_workers=False)
    reference, observations = assert_plain_composers_chunk(eager, replace(config, composer=plain), first, 5)
    again = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                              generator=6)
    assert torch.equal(second.actions, again.actions[0, 0])
    for name in ("rgb", "pcd"):
        assert torch.equal(second.parent_actions[name], again.parent_actions[name][0])

    graph.reconfigure(replace(config, weights=(1.0, 0.0)))  # one parent: composed without a worker step
    third = graph.compose(T0 + 0.01)
    assert third.mode == "normal" and third.weights == {"rgb": 1.0}, third.reason
    alone = Composer([eager[0].parent], replace(plain, parallel_parents=False))
    expected = alone.compose(alone.encode(observations[:1]), torch.tensor([1.0], dtype=torch.float64), generator=7)
    assert torch.equal(third.actions, expected.actions[0, 0])
    assert {p.pid for p in head_workers()} - before == set(pids)
    graph.close()
    assert {p.pid for p in head_workers()} - before == set()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped and reaped
    alone.close()
    reference.close()


def test_spinning_workers_are_refused_for_hosts_in_separate_processes_naming_the_field() -> None:
    """``composer.joint_step_workers: true`` with hosts in other processes: refused (config and composer), no
    worker started."""
    from gpc_ros.compose import ComposerConfig
    from gpc_ros.compose.errors import IncompatibleParentError

    workers = ComposerConfig(parallel_parents="auto", joint_step_workers=True)
    with pytest.raises(ValueError, match="joint_step_workers=True .* deployment must be 'in_process'; got "
                                         "deployment='separate'"):
        ComposerNodeConfig(parents=("left", "right"), weights=(0.5, 0.5), composer=workers)
    before = {p.pid for p in head_workers()}
    config = ComposerNodeConfig(parents=("left", "right"), weights=(0.5, 0.5), composer=workers,
                                deployment="in_process")
    graph = GraphComposer(config, wire(goal_cores()))
    with pytest.raises(IncompatibleParentError, match=r"joint_step_workers=True .* host\(s\) \['left', 'right'\] "
                                                      "are in separate processes"):
        graph.check_compatible()
    assert {p.pid for p in head_workers()} == before


@pytest.mark.parametrize("fault", ["nan", "joint call fails"])
def test_joint_step_of_in_process_hosts_names_the_faulty_host(fault, caplog) -> None:
    """In-process traced hosts in one joint call per step: a NaN host is named and the chunk renormalised to the
    other parent's own chunk; a failing joint call is answered by each host's step alone (the same chunk)."""
    cores = checkpoint_cores(trace_head=True)
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, encode_timeout_s=GENEROUS_S,
                                step_timeout_s=GENEROUS_S)
    graph = GraphComposer(config, [LocalHost(c) for c in cores])
    assert graph.compose(T0 + 0.01).mode == "normal"
    (composer, *_), = graph._composers.values()
    assert composer.stats.joint_steps == 10
    heads = [composer._joint.inner.head, *(c.parent._denoiser for c in cores)]
    if fault == "nan":
        cores[1].nan_injection = True
        faulted = graph.compose(T0 + 0.01)
        assert faulted.mode == "renormalized" and "non-finite" in faulted.faults["pcd"]
        alone = GraphComposer(ComposerNodeConfig(parents=("rgb",), weights=(1.0,), seed=faulted.seed),
                              [LocalHost(cores[0])]).compose(T0 + 0.01)
        assert torch.equal(faulted.actions, alone.actions)
    else:
        class Broken:
            def check_weights(self) -> None:
                pass

            def __call__(self, *args: object) -> None:
                raise RuntimeError("no joint step today")

        composer._joint.inner.head = Broken()
        got = graph.compose(T0 + 0.01)
        assert got.mode == "normal" and "each host's step alone" in caplog.text
        assert_plain_composers_chunk(checkpoint_cores(), config, got, 6)[0].close()
    assert all(head.wait_for_traces(GENEROUS_S) for head in heads)  # no trace left running at exit
    assert composer.joint_encoder.inner.wait_for_traces(GENEROUS_S)
    graph.close()


@pytest.mark.parametrize("case", ["joint", "joint_encode False", "joint encode fails"])
def test_joint_encode_of_in_process_hosts_gives_the_eager_composers_chunk(case, caplog) -> None:
    """In-process traced hosts encode in one call (both encoder modules traced, one forked) per chunk: the chunks
    (eager while the encoder trace is made, then traced) are the plain eager Composer's. With ``joint_encode``
    False each host encodes alone; a failing joint encode is answered by each host's encode (the same chunk)."""
    cores = checkpoint_cores(trace_head=True)
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, encode_timeout_s=GENEROUS_S,
                                step_timeout_s=GENEROUS_S)
    if case == "joint_encode False":
        config = replace(config, composer=replace(config.composer, joint_encode=False))
    graph = GraphComposer(config, [LocalHost(c) for c in cores])
    first = graph.compose(T0 + 0.01)
    (composer, *_), = graph._composers.values()
    joint = composer.joint_encoder
    if joint is not None:
        assert joint.inner.wait_for_traces(GENEROUS_S)  # no trace left running at exit
    if case == "joint encode fails":
        def broken(observations: object) -> None:
            raise RuntimeError("no joint encode today")

        joint.inner = broken
    second = graph.compose(T0 + 0.01)
    assert first.mode == second.mode == "normal", (first.reason, second.reason)
    if case == "joint":
        (encoder,) = joint.inner._joint.values()
        assert (encoder.calls_eager, encoder.calls_traced) == (1, 1) and composer.stats.joint_encodes == 2
    elif case == "joint encode fails":
        assert "each host encodes alone" in caplog.text and composer.stats.joint_encodes == 2
    else:
        assert composer.stats.joint_encodes == 0
    reference, observations = assert_plain_composers_chunk(checkpoint_cores(), config, first, 5)
    again = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                              generator=6)
    assert torch.equal(second.actions, again.actions[0, 0])
    assert composer._joint.inner.head.wait_for_traces(GENEROUS_S)  # no trace left running at exit
    graph.close()
    reference.close()


@pytest.mark.parametrize("split_phase", [True, False])
def test_split_phase_steps_leave_from_the_composers_thread_and_give_the_identical_chunk(split_phase) -> None:
    """Split-phase (default): every step's requests are sent from the thread that composes, rgb then pcd, before
    any reply is awaited; the pool path (split_phase=False) sends pcd's from a pool thread. Same chunk from both,
    equal to the plain Composer's."""
    cores = checkpoint_cores()
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, encode_timeout_s=GENEROUS_S,
                                step_timeout_s=GENEROUS_S)
    config = replace(config, composer=replace(config.composer, parallel_parents=True))  # the pool on every step
    sent: list[tuple[int, str, int]] = []
    handles = wire(cores)
    for handle in handles:
        def logged(request: protocol.Exchange, send=handle._send, name=handle.name) -> None:
            if request.kind == protocol.KIND_PREDICT:
                sent.append((request.step, name, threading.get_ident()))
            send(request)
        handle._send = logged
    graph = GraphComposer(config, handles, split_phase=split_phase)
    result = graph.compose(T0 + 0.01)
    assert result.mode == "normal", result.reason
    reference, _ = assert_plain_composers_chunk(cores, config, result, 5)
    me = threading.get_ident()
    if split_phase:
        assert sent == [(k, n, me) for k in range(10) for n in ("rgb", "pcd")]
    else:
        assert {t for _, n, t in sent if n == "rgb"} == {me} and me not in {t for _, n, t in sent if n == "pcd"}
    graph.close()
    reference.close()


@pytest.mark.parametrize("fault,faulty", [("nan", 0), ("nan", 1), ("stall", 0), ("stall", 1)])
def test_split_phase_a_nan_or_stalled_host_gets_the_configured_fallback(fault, faulty) -> None:
    """Either host answering NaN (status non-finite) or not answering its steps at all (encode still answered):
    the chunk is the fallback parent's own chunk from the same noise, the faulted host is marked down."""
    cores = goal_cores()
    handles = wire(cores)
    names, other = ("left", "right"), 1 - faulty
    if fault == "nan":
        cores[faulty].nan_injection = True
    else:
        send = handles[faulty]._send
        handles[faulty]._send = lambda request: None if request.kind == protocol.KIND_PREDICT else send(request)
    # a stalled host's step wait must expire (2 s); every other wait ends at its reply
    config = ComposerNodeConfig(parents=names, weights=(0.6, 0.4), on_fault="fallback", fallback_parent=names[other],
                                encode_timeout_s=GENEROUS_S, step_timeout_s=2.0 if fault == "stall" else GENEROUS_S)
    graph = GraphComposer(config, handles)
    faulted = graph.compose(T0)
    words = "non-finite" if fault == "nan" else "no reply to step 0 within 2.0 s"
    assert faulted.mode == "fallback" and words in faulted.faults[names[faulty]], faulted.faults
    assert faulted.weights == {names[other]: 1.0} and not handles[faulty].up and handles[other].up
    alone = GraphComposer(ComposerNodeConfig(parents=(names[other],), weights=(1.0,), seed=faulted.seed),
                          [LocalHost(cores[other])]).compose(T0)
    assert torch.equal(faulted.actions, alone.actions)
    graph.close()


def test_a_running_plan_is_sampled_at_the_chunks_own_action_times() -> None:
    from gpc_ros.compose import ActionNormalization, RunningPlan, warm_start_from_plan

    plan = RunningPlan(10.0, 0.1, np.array([[0.0, 1.0, 2.0, 0.08], [1.0, 1.0, 2.0, 0.04], [2.0, 0.0, 2.0, 0.0]]))
    assert plan.end_time_s == pytest.approx(10.2) and plan.remaining_s(10.05) == pytest.approx(0.15)
    values, covered = plan.sample(np.array([9.9, 10.0, 10.05, 10.15, 10.2, 10.5]))
    assert np.allclose(values[:, 0], [0.0, 0.0, 0.5, 1.5, 2.0, 2.0])  # held before / after, linear between
    assert np.allclose(values[:, 1], [1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert covered.tolist() == [True, True, True, True, True, False]
    norm = ActionNormalization.min_max([0.0, 0.0, 0.0], [4.0, 2.0, 4.0])  # a_norm = 2 a / (high - low) - 1
    warm = warm_start_from_plan(plan, 10.05, 0.1, 4, 3, norm)  # times 10.05 .. 10.35, 3 of 4 dims
    assert warm.executed_steps == 0 and tuple(warm.previous_normalized.shape) == (1, 4, 3)
    assert torch.allclose(warm.previous_normalized[0, :, 0], torch.tensor([-0.75, -0.25, 0.0, 0.0]))
    zeros = warm_start_from_plan(plan, 10.05, 0.1, 4, 3, norm, pad="zeros")
    assert torch.equal(zeros.previous_normalized[0, 2:], torch.zeros(2, 3))  # past the plan's end
    with pytest.raises(ValueError, match="the running plan has 4 action dimension"):
        warm_start_from_plan(plan, 10.05, 0.1, 4, 5, norm)
    with pytest.raises(ValueError, match="RunningPlan.actions must be finite"):
        RunningPlan(0.0, 0.1, np.array([[np.nan, 0.0, 0.0]]))


@pytest.mark.parametrize("deployment", ["in_process", "wire"])
def test_a_warm_started_graph_chunk_equals_the_plain_composers(deployment) -> None:
    """With warm_start_from_plan the graph starts from the driver's plan: identical to the plain Composer given the
    same plan, seed and observations, different from a cold start, and only the remaining steps call the parents."""
    from gpc_ros.compose import ComposerConfig, RunningPlan, WarmStartConfig, warm_start_from_plan

    cores = checkpoint_cores()
    composer_config = ComposerConfig(parallel_parents=True, warm_start=WarmStartConfig(remaining_fraction=0.4))
    config = ComposerNodeConfig(parents=("rgb", "pcd"), weights=(0.3, 0.7), seed=5, composer=composer_config,
                                warm_start_from_plan=True, encode_timeout_s=GENEROUS_S, step_timeout_s=GENEROUS_S)
    handles = [LocalHost(c) for c in cores] if deployment == "in_process" else wire(cores)
    graph = GraphComposer(config, handles)
    rng = np.random.default_rng(4)
    plan = RunningPlan(T0 - 0.25, 0.1, 0.45 + np.cumsum(rng.normal(0.0, 0.01, (12, 3)), axis=0))
    result = graph.compose(T0 + 0.01, plan)
    assert result.mode == "normal" and result.warm_start == "plan", result.reason
    assert result.start_s == pytest.approx(T0 + config.first_action_delay_s, abs=1e-6)
    reference = Composer([c.parent for c in cores], composer_config)
    observations = [c.window.at(T0 + 0.01)[0] for c in cores]
    warm = warm_start_from_plan(plan, result.start_s, config.dt_s, reference.horizon, reference.action_dim,
                                reference.normalization, dtype=reference.dtype)
    expected = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                                 generator=5, warm_start=warm)
    assert torch.equal(result.actions, expected.actions[0, 0])
    for name in ("rgb", "pcd"):
        assert torch.equal(result.parent_actions[name], expected.parent_actions[name][0])
    assert expected.network_calls == 4  # 40 % of the 10-step grid
    cold = reference.compose(reference.encode(observations), torch.tensor([0.3, 0.7], dtype=torch.float64),
                             generator=5)
    assert not torch.equal(result.actions, cold.actions[0, 0])
    assert graph.compose(T0 + 0.01).warm_start == "cold: no running plan"
    graph.reconfigure(ComposerNodeConfig(**{**config.__dict__, "warm_start_from_plan": False}))
    assert graph.compose(T0 + 0.01, plan).warm_start == "off"
    graph.close()
    reference.close()


@pytest.mark.parametrize("policy,mode,used", [("renormalize", "renormalized", {"right": 1.0}),
                                              ("fallback", "fallback", {"right": 1.0}),
                                              ("hold", "hold", {})])
def test_a_nan_host_triggers_the_configured_fallback_and_recovers(policy, mode, used) -> None:
    cores = goal_cores()
    # generous waits: every reply comes (the fault is the NaN), so they end at the reply, loaded machine or not
    config = ComposerNodeConfig(parents=("left", "right"), weights=(0.6, 0.4), on_fault=policy,
                                fallback_parent="right", encode_timeout_s=GENEROUS_S, step_timeout_s=GENEROUS_S)
    graph = GraphComposer(config, wire(cores))
    assert graph.compose(T0).mode == "normal"
    cores[0].nan_injection = True
    faulted = graph.compose(T0)
    assert faulted.mode == mode and "left" in faulted.faults and "non-finite" in faulted.faults["left"]
    assert faulted.weights == used
    if mode == "hold":
        assert faulted.actions is None
    else:  # the chunk is the right parent's own chunk from the same noise
        alone = GraphComposer(ComposerNodeConfig(parents=("right",), weights=(1.0,), seed=faulted.seed),
                              [LocalHost(cores[1])]).compose(T0)
        assert torch.equal(faulted.actions, alone.actions)
    cores[0].nan_injection = False
    # the faulted host is down: the next chunk asks it but does not wait for it (so that chunk may still go without
    # it, depending on which thread runs first); its answer marks it up, and the chunk after that uses it again
    graph.compose(T0)
    wait_until(lambda: graph.handles["left"].up, GENEROUS_S, "the recovered host's reply to mark it up")
    recovered = graph.compose(T0)
    assert recovered.mode == "normal" and set(recovered.weights) == {"left", "right"}


def test_a_silent_host_is_a_bounded_fault_and_is_used_again_when_it_answers() -> None:
    cores = goal_cores()
    handles = wire(cores)
    silent = {"on": False}
    send = handles[0]._send
    handles[0]._send = lambda request: None if silent["on"] else send(request)
    # the silent host's encode wait must expire (2 s); the answering host's replies end their waits at once
    config = ComposerNodeConfig(parents=("left", "right"), weights=(0.5, 0.5), encode_timeout_s=2.0,
                                step_timeout_s=GENEROUS_S)
    graph = GraphComposer(config, handles)
    silent["on"] = True
    result = graph.compose(T0)
    assert result.mode == "renormalized" and "no reply" in result.faults["left"]
    assert not handles[0].up
    silent["on"] = False
    graph.compose(T0)  # the down host is asked (not waited for); its reply (on another thread) marks it up again
    wait_until(lambda: handles[0].up, GENEROUS_S, "the silent host's late reply to mark it up")
    assert graph.compose(T0).mode == "normal"


def test_stale_or_skewed_observations_give_no_chunk_and_a_reason() -> None:
    cores = goal_cores()
    config = ComposerNodeConfig(parents=("left", "right"), weights=(0.5, 0.5), max_observation_age_s=0.5,
                                max_observation_skew_s=0.1)
    graph = GraphComposer(config, [LocalHost(c) for c in cores])
    stale = graph.compose(T0 + 0.8)
    assert stale.actions is None and "stale observation" in stale.reason
    cores[1].window.add_state(T0 + 0.3, np.array([0.55, 0.0, 0.52]))
    skewed = graph.compose(T0 + 0.35)
    assert skewed.actions is None and "skewed" in skewed.reason
    empty = GraphComposer(config, [LocalHost(HostCore(c.parent, c.observing)) for c in cores]).compose(T0)
    assert empty.actions is None and "no observation" in empty.reason


def test_weight_zero_parents_are_not_called_and_weights_change_at_the_next_chunk() -> None:
    cores = goal_cores()
    graph = GraphComposer(ComposerNodeConfig(parents=("left", "right"), weights=(0.5, 0.5)),
                          [LocalHost(c) for c in cores])
    graph.compose(T0)
    calls = cores[1].parent.calls
    graph.reconfigure(ComposerNodeConfig(parents=("left", "right"), weights=(1.0, 0.0)))
    result = graph.compose(T0)
    assert cores[1].parent.calls == calls and result.weights == {"left": 1.0}
    assert float(result.actions[-1, 1]) > 0.05  # heads to the left goal (y = +0.12)


@pytest.mark.parametrize("changes,words", [
    ({"weights": (0.5, 0.6)}, "sum to 1.1"), ({"weights": (1.0,)}, "one value per parent"),
    ({"on_fault": "pray"}, "on_fault must be one of"), ({"on_fault": "fallback", "fallback_parent": "x"},
                                                         "fallback_parent must be one of"),
    ({"step_timeout_s": 0.0}, "step_timeout_s must be a number > 0"), ({"parents": ("a", "a")}, "unique")])
def test_bad_composer_configs_are_refused_with_the_field_named(changes, words) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        ComposerNodeConfig(**{"parents": ("left", "right"), "weights": (0.5, 0.5), **changes})


def test_incompatible_hosts_are_refused_naming_both() -> None:
    from gpc_ros.compose.errors import IncompatibleParentError
    from gpc_ros.graph.host import Observing

    odd = GoalParent("odd", [0.6, 0.0, 0.4])
    odd.action_dim = 4
    handles = [LocalHost(HostCore(GoalParent("left", [0.6, 0.1, 0.4]), Observing("state", 1, 3))),
               LocalHost(HostCore(odd, Observing("state", 1, 3)))]
    graph = GraphComposer(ComposerNodeConfig(parents=("left", "odd"), weights=(0.5, 0.5)), handles)
    with pytest.raises(IncompatibleParentError, match="'odd'.*'left'"):
        graph.check_compatible()


def test_host_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="exactly one of checkpoint and factory"):
        HostConfig(name="a")
    with pytest.raises(ValueError, match="factory_kwargs must be a JSON object"):
        HostConfig(name="a", factory="m:f", modality="state", factory_kwargs="[1]")
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_host_parent(HostConfig(name="a", factory="gpc_ros.nope:f", modality="state"))
    assert math.isnan(protocol.encode_request(1, 0.0, 32).value)
    for bad in ("x", "1-0", "-1", "0,,1", "0-"):
        with pytest.raises(ValueError, match=f"HostConfig.cpu_affinity must be a CPU list .*got '{bad}'"):
            HostConfig(name="a", factory="m:f", modality="state", cpu_affinity=bad)


def test_cpu_lists_parse_as_taskset_reads_them_and_pinning_moves_every_thread() -> None:
    import subprocess
    import sys

    from gpc_ros.graph.affinity import parse_cpu_list

    assert parse_cpu_list("") == frozenset() and parse_cpu_list(" ") == frozenset()
    assert parse_cpu_list("0,2-4, 7") == {0, 2, 3, 4, 7}
    cpu = max(os.sched_getaffinity(0))
    # in a child process (pinning is per process): a thread started before pin_process and one started after
    code = f"""
import os, threading
from gpc_ros.graph.affinity import pin_process
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
print(pin_process({{{cpu}}}))
after = threading.Thread(target=stop.wait); after.start()
print(sorted(os.sched_getaffinity(before.native_id)), sorted(os.sched_getaffinity(after.native_id)))
try:
    pin_process({{{cpu + 1000}}})
except ValueError as exc:
    print(exc)
stop.set()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:2] == [f"[{cpu}]", f"[{cpu}] [{cpu}]"], out
    assert out[2].startswith(f"cpu_affinity [{cpu + 1000}] is not a subset of the CPUs this process may use"), out


def test_episode_search_records_outcomes_and_resumes_from_its_file(tmp_path) -> None:
    from gpc_ros.graph.composition import EpisodeSearch

    path = str(tmp_path / "search.json")
    search = EpisodeSearch(path, ["left", "right"], "grid", divisions=2)
    first = search.weights.tolist()
    nxt = search.outcome(True)
    assert nxt != tuple(first) and sum(nxt) == pytest.approx(1.0)
    resumed = EpisodeSearch(path, ["left", "right"], "grid", divisions=2)
    assert resumed.search.trials.sum() == 1 and resumed.search.successes.sum() == 1
    with pytest.raises(ValueError, match="not this one"):
        EpisodeSearch(path, ["left", "right", "third"], "grid", divisions=2)
