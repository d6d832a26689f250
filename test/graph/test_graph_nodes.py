"""The graph as real rclpy processes on an isolated domain: policy hosts + composer, both deployments.

* the published chunk equals the plain in-process Composer's chunk for the same seed and observations (trained
  test checkpoints: an RGB diffusion parent and a point-cloud flow parent), hosts in their own processes and
  hosts inside the composer's process;
* fault drills on analytic goal parents: NaN, a killed host, a stalled host -> renormalise / fallback / hold per
  the run-time parameter, and recovery; a run-time weight change and a refused one;
* stale and skewed observations -> no chunk and a diagnostic.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from .conftest import (
    GOAL_HOSTS,
    START_M,
    chunk_positions,
    composer_params,
    used_weights,
    write_params,
)

pytestmark = pytest.mark.timeout(400)

DATA = "test/policies/data"


def host_argv(name: str, params: str, *extra: str) -> list[str]:
    return ["-m", "gpc_ros.nodes.policy_host_node", "--ros-args", "-r", f"__node:={name}_host",
            "--params-file", params, *extra]


def composer_argv(*params: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["-m", "gpc_ros.nodes.composer_node", "--ros-args", "-r", "__node:=composer",
            *[x for p in params for x in ("--params-file", p)], *extra]


# ------------------------------------------------------------------------------------------------------ equality
def checkpoint_hosts(trace_head: bool = False) -> dict:
    common = {"factory": "", "factory_kwargs": "{}", "modality": "auto", "obs_horizon": 0, "state_dim": -1,
              "torch_threads": 1, "trace_head": trace_head}
    return {f"{name}_host": {"ros__parameters": {"name": name, "checkpoint": os.path.abspath(f"{DATA}/{folder}"),
                                                 **common}}
            for name, folder in (("rgb", "diffusion_rgb"), ("pcd", "flow_pointcloud"))}


def reference_chunk(image: np.ndarray, points: np.ndarray, state: np.ndarray, weights, seed: int, composer_config,
                    plan=None, start_s: float = 0.0, dt_s: float = 0.1):
    """The plain Composer on the same checkpoints and observation window (two identical frames); with ``plan``
    warm-started from it for a chunk whose first action is due at ``start_s``."""
    from gpc_ros.compose import Composer, warm_start_from_plan
    from gpc_ros.policies import load_parent

    torch.set_num_threads(1)
    parents = [load_parent(f"{DATA}/diffusion_rgb", "rgb"), load_parent(f"{DATA}/flow_pointcloud", "pcd")]
    states = np.stack([state, state])[None].astype(np.float32)
    observations = [{"observation.image": np.stack([image, image])[None], "observation.state": states},
                    {"observation.pointcloud": np.stack([points, points])[None], "observation.state": states}]
    with Composer(parents, composer_config) as composer:
        warm = None if plan is None else warm_start_from_plan(
            plan, start_s, dt_s, composer.horizon, composer.action_dim, composer.normalization,
            composer_config.warm_start.pad, composer.dtype)
        return composer.compose(composer.encode(observations), torch.tensor(weights, dtype=torch.float64),
                                generator=seed, warm_start=warm)


def plan_publisher(probe):
    """The probe's publisher on /gpc/driver_plan, with the driver's QoS (transient local)."""
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from gpc_ros.nodes import conversions

    if not hasattr(probe, "plan_pub"):
        probe.plan_pub = probe.node.create_publisher(MultiDOFJointTrajectory, conversions.DRIVER_PLAN_TOPIC,
                                                     conversions.driver_plan_qos())
    return probe.plan_pub


def driver_plan(probe, start_s: float, positions: np.ndarray):
    """Publish a running plan on /gpc/driver_plan as the driver does; returns the message."""
    from gpc_ros.control.chunk import ActionChunk
    from gpc_ros.nodes import conversions

    chunk = None if len(positions) == 0 else ActionChunk.from_arrays(
        start_s, 0.1, positions_m=positions, quaternions_xyzw=np.tile([1.0, 0.0, 0.0, 0.0], (len(positions), 1)))
    msg = conversions.driver_plan_msg(chunk, probe.now_s())
    plan_publisher(probe).publish(msg)
    return msg


def child_pids(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc), but multiprocessing's resource tracker."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().split(") ")[-1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline:
                found.add(int(entry))
    return found


@pytest.mark.parametrize("deployment,warm,workers", [
    pytest.param("separate", False, False, marks=pytest.mark.slow),
    pytest.param("separate", True, False, marks=pytest.mark.slow),
    ("in_process", False, False), ("in_process", True, False), ("in_process", False, True)])
def test_published_chunk_equals_the_in_process_composers_for_the_same_seed(deployment, warm, workers, ros_domain,
                                                                             probe, tmp_path) -> None:
    """Same seed, observations (and, warm, the driver's running plan) -> the plain Composer's chunk exactly. With
    ``workers``: hosts with traced heads and ``composer.joint_step_workers`` (the second head in a worker process
    of the composer's); Ctrl-C stops the composer and leaves no worker process."""
    from sensor_msgs.msg import Image, PointCloud2

    from gpc_ros.graph.composition import ComposerNodeConfig
    from gpc_ros.nodes import conversions
    from gpc_ros.nodes.parameters import build_config

    hosts = write_params(tmp_path, "hosts.yaml", checkpoint_hosts(trace_head=workers))
    block = composer_params(parents=["rgb", "pcd"], weights=[0.3, 0.7], seed=11, on_fault="hold",
                            replan_period_s=0.3, max_observation_age_s=5.0, max_observation_skew_s=1.0,
                            deployment=deployment, encode_timeout_s=60.0, step_timeout_s=60.0,
                            warm_start_from_plan=warm, min_plan_remaining_s=0.0,
                            **{"composer.warm_start.remaining_fraction": 0.6,
                               "composer.joint_step_workers": workers})
    composer = write_params(tmp_path, "composer.yaml", block)
    if deployment == "separate":
        for name in ("rgb", "pcd"):
            ros_domain.spawn_python(*host_argv(name, hosts))
    proc = ros_domain.spawn_python(*composer_argv(composer, hosts))
    probe.watch_parent("rgb")
    probe.watch_parent("pcd")

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    points = rng.uniform(-0.3, 0.6, (64, 3)).astype(np.float32)
    state = np.array([0.45, 0.1, 0.3])
    plan = None
    if warm:  # the driver's running plan: 100 s of a slow drift from the state (long enough for every chunk)
        steps = np.arange(1000)[:, None] * np.array([1e-4, -5e-5, 2e-5])
        plan = conversions.running_plan_from_msg(driver_plan(probe, probe.now_s() - 0.5, state + steps))
    image_pub = probe.node.create_publisher(Image, "/camera/camera/color/image_raw", 10)
    points_pub = probe.node.create_publisher(PointCloud2, "/gpc/points", 10)

    def publish() -> None:  # the same content every time, fresh stamps (one stamp for all three)
        now = probe.now_s()
        stamp = conversions.seconds_to_stamp(now)
        image_pub.publish(conversions.rgb_to_image_msg(image, stamp, "camera_color_optical_frame"))
        points_pub.publish(conversions.pointcloud2_msg(points, stamp, "fr3_link0"))
        probe.publish_pose(state)

    if warm:  # observations only once the composer holds the plan, so that its first chunk starts from it
        assert probe.spin_until(lambda: probe.last_status().get("plan_remaining_s", "none") != "none", 180.0), (
            proc.poll(), probe.last_status())
    assert probe.spin_until(lambda: len(probe.chunks) >= 2 and all(probe.parent_chunks.values()), 180.0,
                            every=publish, period_s=0.1), (proc.poll(), probe.last_status())
    config = build_config(ComposerNodeConfig, {"composer.warm_start.remaining_fraction": 0.6})

    def reference(k: int):  # chunk k uses seed 11 + k (and, warm, its own first-action time on the plan)
        start_s = conversions.stamp_to_seconds(probe.chunks[k].header.stamp)
        return reference_chunk(image, points, state.astype(np.float32), [0.3, 0.7], 11 + k, config.composer,
                               plan, start_s, config.dt_s)

    expected = reference(0)
    got = chunk_positions(probe.chunks[0])
    want = expected.actions[0, 0].double().numpy()
    assert got.shape == want.shape and np.array_equal(got, want), np.abs(got - want).max()
    assert expected.network_calls == (6 if warm else 10)
    for name in ("rgb", "pcd"):
        assert np.array_equal(chunk_positions(probe.parent_chunks[name][0]),
                              expected.parent_actions[name][0].double().numpy())
    assert np.array_equal(chunk_positions(probe.chunks[1]), reference(1).actions[0, 0].double().numpy())
    if warm:  # the status is published at 1 Hz: the latest one may predate the chunks (e.g. the first, refused
        # attempt before the hosts had an observation), so wait for one that reports a composed chunk
        assert probe.spin_until(lambda: int(probe.last_status().get("chunks", 0)) >= 2, 30.0, every=publish,
                                period_s=0.1), probe.last_status()
        assert probe.last_status()["warm_start"] == "plan", probe.last_status()
    if workers:  # one worker process (the second head's), stopped with the composer
        spawned = child_pids(proc.pid)
        assert len(spawned) == 1, spawned
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60.0)
        assert proc.returncode == 0, out[-3000:]
        assert not any(os.path.exists(f"/proc/{pid}") for pid in spawned), out[-3000:]


def test_a_short_driver_plan_triggers_a_chunk_before_the_period_ends(ros_domain, probe, tmp_path) -> None:
    """With a replan period of 1000 s the only chunks are the ones the driver's plan asks for: one when the plan has
    less than min_plan_remaining_s left (not before), one at once when the driver has no plan."""
    hosts = write_params(tmp_path, "hosts.yaml", GOAL_HOSTS)
    composer = write_params(tmp_path, "composer.yaml", composer_params(
        deployment="in_process", replan_period_s=1000.0, min_plan_remaining_s=1.0, max_observation_age_s=3.0,
        max_observation_skew_s=1.0, encode_timeout_s=60.0, step_timeout_s=60.0))
    proc = ros_domain.spawn_python(*composer_argv(composer, hosts))
    # the composer is up and its hosts have observations
    assert probe.spin_until(lambda: bool(probe.status), 180.0, every=probe.publish_pose), proc.poll()
    assert probe.spin_until(lambda: plan_publisher(probe).get_subscription_count() > 0, 60.0,
                            every=probe.publish_pose)
    seen = len(probe.chunks)
    end_s = probe.now_s() + 2.5  # a 26-step plan ending in 2.5 s: short (< 1 s left) from end_s - 1 s on
    driver_plan(probe, end_s - 2.5, np.tile(START_M, (26, 1)))
    assert probe.spin_until(lambda: len(probe.chunks) > seen, 120.0, every=probe.publish_pose), probe.last_status()
    received_s = probe.now_s()  # at or after the chunk arrived, so at or after the composer's timer fired
    assert received_s >= end_s - 1.0, received_s - end_s  # not before the plan ran short
    assert int(probe.last_status().get("short_plan_replans", 0)) >= 1 or probe.spin_until(
        lambda: int(probe.last_status().get("short_plan_replans", 0)) >= 1, 30.0, every=probe.publish_pose)
    # the driver dropped its plan (stop, watchdog): a chunk at once
    seen = len(probe.chunks)
    driver_plan(probe, 0.0, np.zeros((0, 3)))
    assert probe.spin_until(lambda: len(probe.chunks) > seen, 120.0, every=probe.publish_pose), probe.last_status()


# ------------------------------------------------------------------------------------------------ fault drills
def goal_graph(ros_domain, tmp_path, extra_hosts: dict | None = None, **composer_overrides):
    hosts = write_params(tmp_path, "hosts.yaml", GOAL_HOSTS, extra_hosts or {})
    overrides = {"max_observation_age_s": 3.0, "max_observation_skew_s": 1.0, "encode_timeout_s": 2.0,
                 "step_timeout_s": 2.0, **composer_overrides}
    composer = write_params(tmp_path, "composer.yaml", composer_params(**overrides))
    procs = {name: ros_domain.spawn_python(*host_argv(name, hosts)) for name in ("left", "right")}
    procs["composer"] = ros_domain.spawn_python(*composer_argv(composer, hosts))
    return hosts, procs


def wait_mode(probe, mode: str, timeout_s: float = 60.0, since: int = 0) -> dict:
    ok = probe.spin_until(lambda: any(s.get("mode") == mode for s in probe.status[since:]), timeout_s,
                          every=probe.publish_pose)
    assert ok, f"composer never reported mode {mode!r}; last: {probe.last_status()}"
    return next(s for s in probe.status[since:] if s.get("mode") == mode)


def call_bool(probe, service: str, value: bool) -> None:
    from std_srvs.srv import SetBool

    from gpc_ros.testing.spin import spin_until

    client = probe.node.create_client(SetBool, service)
    assert client.wait_for_service(timeout_sec=30.0), service
    future = client.call_async(SetBool.Request(data=value))
    assert spin_until(probe.executor, future.done, 30.0) and future.result().success
    probe.node.destroy_client(client)


@pytest.mark.slow
def test_host_faults_trigger_each_configured_fallback_and_recover(ros_domain, probe, tmp_path) -> None:
    hosts, procs = goal_graph(ros_domain, tmp_path, on_fault="renormalize")
    wait_mode(probe, "normal", 180.0)

    # NaN from a host -> renormalised over the other one; back to normal when it answers properly again
    call_bool(probe, "/left_host/inject_nan", True)
    status = wait_mode(probe, "renormalized", since=len(probe.status))
    assert used_weights(status) == {"right": 1.0} and "non-finite" in status["message"]
    call_bool(probe, "/left_host/inject_nan", False)
    wait_mode(probe, "normal", since=len(probe.status))

    # the host dies -> renormalised; fallback and hold chosen at run time
    procs["left"].kill()
    status = wait_mode(probe, "renormalized", since=len(probe.status))
    assert "left" in status["message"]
    assert all(r.successful for r in probe.set_parameters(on_fault="fallback", fallback_parent="right"))
    status = wait_mode(probe, "fallback", since=len(probe.status))
    assert used_weights(status) == {"right": 1.0}
    assert all(r.successful for r in probe.set_parameters(on_fault="hold"))
    wait_mode(probe, "hold", since=len(probe.status))
    held_at = len(probe.chunks)
    probe.spin_until(lambda: False, 1.5, every=probe.publish_pose)
    assert len(probe.chunks) <= held_at + 1  # at most one chunk that was already on its way

    # the host comes back -> used again
    procs["left"] = ros_domain.spawn_python(*host_argv("left", hosts))
    status = wait_mode(probe, "normal", 120.0, since=len(probe.status))
    assert used_weights(status) == {"left": 0.5, "right": 0.5}

    # a stalled host (SIGSTOP) is a bounded fault; it recovers after SIGCONT
    assert all(r.successful for r in probe.set_parameters(on_fault="renormalize", step_timeout_s=0.5,
                                                          encode_timeout_s=0.5))
    os.kill(procs["right"].pid, signal.SIGSTOP)
    try:
        status = wait_mode(probe, "renormalized", since=len(probe.status))
        assert used_weights(status) == {"left": 1.0}
    finally:
        os.kill(procs["right"].pid, signal.SIGCONT)
    wait_mode(probe, "normal", 60.0, since=len(probe.status))


def test_run_time_weight_change_takes_effect_and_bad_values_are_refused(ros_domain, probe, tmp_path) -> None:
    from std_msgs.msg import Bool

    from gpc_ros.graph.composition import EpisodeSearch

    state = tmp_path / "search.json"
    goal_graph(ros_domain, tmp_path, search_state_path=str(state))
    wait_mode(probe, "normal", 180.0)
    # an episode outcome feeds the online weight search: recorded, saved, the next arm's weights used
    replay = EpisodeSearch(str(tmp_path / "replay.json"), ["left", "right"])
    expected = list(replay.outcome(True))
    outcome = probe.node.create_publisher(Bool, "/gpc/episode_outcome", 10)
    assert probe.spin_until(lambda: outcome.get_subscription_count() > 0, 30.0)
    outcome.publish(Bool(data=True))
    assert probe.spin_until(lambda: state.exists() and json.loads(probe.last_status().get("weights", "[]")
                                                                  .replace("'", '"')) == expected, 60.0,
                            every=probe.publish_pose), (state.exists(), probe.last_status())
    saved = json.loads(state.read_text())
    assert sum(saved["trials"]) == 1 and sum(saved["successes"]) == 1
    bad = probe.set_parameters(weights=[0.5, 0.6])
    assert not bad[0].successful and "sum to 1.1" in bad[0].reason
    fixed = probe.set_parameters(deployment="in_process")
    assert not fixed[0].successful  # read-only at run time
    assert probe.set_parameters(weights=[1.0, 0.0])[0].successful
    seen = len(probe.chunks)
    status = wait_mode(probe, "normal", since=len(probe.status))
    probe.spin_until(lambda: used_weights(probe.last_status()) == {"left": 1.0} and len(probe.chunks) > seen + 1,
                     60.0, every=probe.publish_pose)
    assert used_weights(probe.last_status()) == {"left": 1.0}, status
    # the left parent alone heads for its goal (y = +0.12) from the start pose
    assert chunk_positions(probe.chunks[-1])[-1, 1] > START_M[1] + 0.05


@pytest.mark.slow
def test_stale_or_skewed_observations_give_no_chunk_and_a_diagnostic(ros_domain, probe, tmp_path) -> None:
    remap = {"right_host": {"ros__parameters": GOAL_HOSTS["right_host"]["ros__parameters"]}}
    hosts = write_params(tmp_path, "hosts.yaml", GOAL_HOSTS, remap)
    composer = write_params(tmp_path, "composer.yaml", composer_params(
        max_observation_age_s=0.8, max_observation_skew_s=0.2, on_fault="hold", replan_period_s=0.2))
    ros_domain.spawn_python(*host_argv("left", hosts))
    ros_domain.spawn_python(*host_argv("right", hosts, "-r", "ee_pose:=ee_pose_right"))
    ros_domain.spawn_python(*composer_argv(composer, hosts))

    def both(age_left: float, age_right: float):
        def publish() -> None:
            probe.publish_pose(age_s=age_left)
            probe.publish_pose(topic="ee_pose_right", age_s=age_right)
        return publish

    def refused(word: str):
        return lambda: any(word in s.get("message", "") for s in probe.status)

    assert probe.spin_until(refused("stale observation"), 180.0, every=both(2.0, 2.0)), probe.last_status()
    assert not probe.chunks
    assert probe.spin_until(refused("skewed observations"), 60.0, every=both(0.0, 0.5)), probe.last_status()
    assert not probe.chunks
    status = next(s for s in probe.status if "skewed" in s.get("message", ""))
    assert status["level"] in (1, b"\x01")  # WARN
    assert probe.spin_until(lambda: len(probe.chunks) >= 2 and probe.last_status().get("mode") == "normal", 60.0,
                            every=both(0.0, 0.0)), probe.last_status()
    assert json.loads(probe.last_status()["used_weights"]) == {"left": 0.5, "right": 0.5}


# ------------------------------------------------------------------------------------------------- cpu affinity
def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets every thread of process ``pid`` may run on."""
    sets = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            sets.add(frozenset(os.sched_getaffinity(int(tid))))
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return sets


def test_cpu_affinity_pins_a_host_process_but_never_the_composer_that_runs_hosts_inside(ros_domain, probe,
                                                                                         tmp_path) -> None:
    """A host process with cpu_affinity runs all its threads on that CPU; hosts inside the composer's process ignore
    it (they would pin the composer) and the composer still composes."""
    from std_msgs.msg import String

    from gpc_ros.nodes.policy_host_node import ANNOUNCE_QOS

    cpu = max(os.sched_getaffinity(0))
    pinned = {name: {"ros__parameters": {**block["ros__parameters"], "cpu_affinity": str(cpu)}}
              for name, block in GOAL_HOSTS.items()}
    solo = {"solo_host": {"ros__parameters": {**pinned["left_host"]["ros__parameters"], "name": "solo"}}}
    hosts = write_params(tmp_path, "hosts.yaml", pinned, solo)
    composer = write_params(tmp_path, "composer.yaml", composer_params(
        deployment="in_process", max_observation_age_s=3.0, max_observation_skew_s=1.0, encode_timeout_s=60.0,
        step_timeout_s=60.0))
    host = ros_domain.spawn_python(*host_argv("solo", hosts))
    proc = ros_domain.spawn_python(*composer_argv(composer, hosts))
    announced = []
    probe.node.create_subscription(String, "/gpc/hosts/solo/announce", announced.append, ANNOUNCE_QOS)
    assert probe.spin_until(lambda: announced and len(probe.chunks) >= 1, 180.0, every=probe.publish_pose), (
        host.poll(), proc.poll(), probe.last_status())
    assert thread_cpus(host.pid) == {frozenset({cpu})}
    assert thread_cpus(proc.pid) == {frozenset(os.sched_getaffinity(0))}
