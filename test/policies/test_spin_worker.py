"""Heads 2..K in spinning worker processes (``ComposerConfig.joint_step_workers``): the same chunks, real processes.

Every wait is bounded and generous (the suite runs on a loaded, shared machine); nothing here asserts a time.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig
from gpc_ros.compose.errors import IncompatibleParentError
from gpc_ros.policies.encoders.observation import random_observation
from gpc_ros.policies.spin_worker import SpinningHeadsStep

from .test_traced_head import assert_same_chunks, shipped

READY_S = 120.0  # a worker's start-up (a new interpreter importing torch) on a loaded machine
WEIGHTS = ([0.5, 0.5], [[0.3, 0.7], [1.0, 0.0]])
CONFIG = ComposerConfig(sampler=SamplerConfig("ddim", 10), joint_step_workers=True)


@pytest.fixture(scope="module")
def parents():
    return shipped("diffusion", 1), shipped("dp3", 2)


@pytest.fixture(scope="module")
def observations(parents):
    return [random_observation(p.config.observation, 1, seed=i) for i, p in enumerate(parents)]


def sequential(policies, observations, weights=WEIGHTS, config=CONFIG):
    """The chunks of the eager sequential Composer (the reference)."""
    config = replace(config, joint_step_workers=False, joint_step=False)
    with Composer([p.as_parent(f"{p.policy_type}{i}") for i, p in enumerate(policies)], config) as composer:
        return [composer.compose(composer.encode(observations), w, generator=3) for w in weights]


def with_workers(policies, config=CONFIG) -> Composer:
    composer = Composer([p.as_parent(f"{p.policy_type}{i}", trace_head=True) for i, p in enumerate(policies)],
                        config)
    assert isinstance(composer._joint, SpinningHeadsStep)
    assert composer._joint.wait_ready(READY_S)
    return composer


def gone(pid: int, timeout_s: float = 30.0) -> bool:
    """True once process ``pid`` no longer exists (or is a zombie of another parent)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def children() -> set[int]:
    """This process's live child processes (from /proc), but multiprocessing's resource tracker (one per
    interpreter, started with the first shared memory block; it exits with this process)."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().split(") ")[-1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if b"resource_tracker" in f.read():
                            continue
                except FileNotFoundError:
                    continue
                found.add(int(entry))
    return found


def test_chunks_equal_the_sequential_ones_and_close_leaves_no_process(parents, observations) -> None:
    """K = 2, DDIM-10: every chunk and each parent's own chunk torch.equal to the eager sequential Composer's, also
    after a parent's weights change in place (sent to its worker at the next chunk); close() stops the worker."""
    want = sequential(parents, observations)
    before = children()
    composer = with_workers(parents)
    step = composer._joint
    pids = [w.process.pid for w in step.workers]
    assert set(pids) <= children() - before
    for _ in range(2):  # first round: the traces are made meanwhile (eager answers), second: traced
        assert_same_chunks([composer.compose(composer.encode(observations), w, generator=3) for w in WEIGHTS], want)
    assert step.worker_steps == 40 and step.fallback_steps == 0 and composer.stats.joint_steps == 40

    changed = [shipped("diffusion", 1), shipped("dp3", 2)]
    head = changed[1].as_parent("dp3", trace_head=True)._denoiser.module  # the policy's own noise network
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(0.9)
        composer.parents[1]._denoiser.module.load_state_dict(head.state_dict())  # in place: versions bump
    want_changed = sequential(changed, observations)
    assert_same_chunks([composer.compose(composer.encode(observations), w, generator=3) for w in WEIGHTS],
                       want_changed)
    assert step.fallback_steps == 0 and step.worker_steps == 60
    composer.close()
    assert all(gone(pid) for pid in pids)
    assert children() <= before
    composer.close()  # idempotent


def test_a_killed_worker_falls_back_to_the_same_chunks(parents, observations, caplog) -> None:
    want = sequential(parents, observations)
    with with_workers(parents) as composer:
        step = composer._joint
        got = [composer.compose(composer.encode(observations), WEIGHTS[0], generator=3)]
        os.kill(step.workers[0].process.pid, signal.SIGKILL)
        assert gone(step.workers[0].process.pid)
        with caplog.at_level(logging.WARNING, logger="gpc_ros.policies.spin_worker"):
            got.append(composer.compose(composer.encode(observations), WEIGHTS[1], generator=3))
            again = composer.compose(composer.encode(observations), WEIGHTS[1], generator=3)
        assert_same_chunks(got, want)
        assert_same_chunks([again], want[1:])
        assert step.worker_steps == 10 and step.fallback_steps == 20
        assert len([r for r in caplog.records if "spinning worker" in r.getMessage()]) == 1  # logged once


def test_three_parents_two_workers_and_garbage_collection(parents, observations) -> None:
    """K = 3 on this 2-CPU machine: two workers, nothing pinned (fewer CPUs than parents); the same chunk.
    A composer dropped without close() stops its workers when collected."""
    policies = [*parents, shipped("diffusion", 13)]
    observations = [*observations, random_observation(policies[2].config.observation, 1, seed=2)]
    config = replace(CONFIG, sampler=SamplerConfig("ddim", 4), return_parent_chunks=False)
    want = sequential(policies, observations, ([0.2, 0.3, 0.5],), config)
    composer = with_workers(policies, config)
    step = composer._joint
    assert len(step.workers) == 2 and step.pin == (len(os.sched_getaffinity(0)) >= 3)
    got = [composer.compose(composer.encode(observations), [0.2, 0.3, 0.5], generator=3) for _ in range(2)]
    assert step.worker_steps == 8 and step.fallback_steps == 0
    for chunk in got:
        assert torch.equal(chunk.actions, want[0].actions)
    pids = [w.process.pid for w in step.workers]
    del composer, step
    gc.collect()
    assert all(gone(pid) for pid in pids)


#: A process that starts a worker and dies at once, without close() (its worker is still starting up).
DIES_AT_ONCE = """
import os
from gpc_ros.compose import Composer, ComposerConfig
from gpc_ros.graph.host import HostConfig, load_host_parent
parents = [load_host_parent(HostConfig(name=n, checkpoint="test/policies/data/" + folder, trace_head=True))[0]
           for n, folder in (("rgb", "diffusion_rgb"), ("pcd", "flow_pointcloud"))]
composer = Composer(parents, ComposerConfig(joint_step_workers=True))
print(composer._joint.workers[0].process.pid, flush=True)
os._exit(0)
"""


def test_a_worker_whose_creator_died_while_it_started_exits_by_itself(tmp_path) -> None:
    """The creator gone before its worker's interpreter has started (so the worker's parent is already init or a
    subreaper when it looks): the worker notices and exits (it used to sleep-wait forever, an orphan)."""
    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "creator.txt"
    with open(log, "w") as out:  # a file, not a pipe: the worker inherits it, and a pipe would stay open with it
        code = subprocess.run([sys.executable, "-c", DIES_AT_ONCE], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(root)}, timeout=READY_S).returncode
    text = log.read_text()
    assert code == 0, text[-3000:]
    pid = int(text.split()[0])
    try:
        assert gone(pid, READY_S)
    finally:
        if os.path.exists(f"/proc/{pid}"):  # do not leave it behind when the test fails
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("make,error,match", [
    (lambda: ComposerConfig(joint_step_workers="yes"), ValueError,
     r"ComposerConfig.joint_step_workers must be True or False; got 'yes'"),
    (lambda: ComposerConfig(joint_step_workers=True, joint_step=False), ValueError,
     r"ComposerConfig.joint_step_workers=True .* joint_step must be True or 'auto'; got joint_step=False"),
])
def test_bad_settings_are_refused_with_the_field_and_the_value(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_parents_without_traced_heads_are_refused(parents) -> None:
    with pytest.raises(IncompatibleParentError, match=r"ComposerConfig.joint_step_workers=True needs .*use False"):
        Composer([p.as_parent(p.policy_type) for p in parents], CONFIG)


def test_a_started_step_never_collected_leaves_the_next_steps_each_parents_own(parents, observations) -> None:
    """``start`` (the composer's split step): ``first`` is parent 1's prediction, ``rest()`` the others'. A started
    step whose ``rest()`` is never called (the composer stopped at a failure) leaves the next steps' predictions each
    parent's own ``predict``, though the worker may still be running it (its inputs are read in place)."""
    with with_workers(parents) as composer:
        step = composer._joint
        encodings = composer.encode(observations)

        def requests(seed: int) -> list:
            g = torch.Generator().manual_seed(seed)
            return [(torch.randn(1, p.action_horizon, p.action_dim, generator=g), 7.0 * seed, e)
                    for p, e in zip(composer.parents, encodings)]

        want = {s: [p.predict(*r) for p, r in zip(composer.parents, requests(s))] for s in (1, 2)}
        step.new_chunk()
        try:
            for _ in range(2):  # traces made meanwhile, then traced
                assert all(map(torch.equal, step(requests(1)), want[1]))
                pending = step.start(requests(2))  # never collected
                assert torch.equal(pending.first, want[2][0])
                assert all(map(torch.equal, step(requests(1)), want[1]))
                pending = step.start(requests(2))
                assert all(map(torch.equal, [pending.first, *pending.rest()], want[2]))
                assert pending.rest() is pending.rest()  # collected once
        finally:
            step.end_chunk()
        assert step.fallback_steps == 0 and step.worker_steps == 6
