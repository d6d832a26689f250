"""A policy host in its own network namespace, joined to the composer's by a veth pair: the graph does not assume
one machine (docs/protocol.md, "Hosts on another machine").

Needs root (``ip netns``); skipped otherwise. The processes use Fast DDS's UDPv4 transport only: shared memory
(/dev/shm) is visible across network namespaces, and with it the samples would not cross the veth at all.
Discovery uses ``ROS_STATIC_PEERS`` (unicast to the other end), as on a lab network without multicast.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest

from .conftest import GOAL_HOSTS, composer_params, write_params

pytestmark = [pytest.mark.timeout(660), pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="ip netns needs root")]


def outputs(procs: dict[str, subprocess.Popen]) -> str:
    """The last lines each process printed (it is stopped first, so that its pipe can be read to the end)."""
    out = []
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
        text = proc.communicate(timeout=30)[0] or ""
        out.append(f"--- {name} (exit {proc.returncode}):\n" + "\n".join(text.splitlines()[-25:]))
    return "\n".join(out)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def veth_namespace():
    """``(namespace, composer side address, host side address)``; removed afterwards."""
    tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
    ns, outer, inner = f"gpc{tag}", f"gva{tag}", f"gvb{tag}"
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
    ip("netns", "add", ns)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", f"{subnet}.1/24", "dev", outer)
        ip("link", "set", outer, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{subnet}.2/24", "dev", inner)
        ip("netns", "exec", ns, "ip", "link", "set", inner, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, f"{subnet}.1", f"{subnet}.2"
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_a_host_in_another_network_namespace_serves_every_step_over_the_veth(ros_domain, veth_namespace,
                                                                             tmp_path, monkeypatch) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from .conftest import Probe, used_weights

    ns, outer_ip, inner_ip = veth_namespace
    net = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}
    outside = {**net, "ROS_STATIC_PEERS": inner_ip}
    inside = {**net, "ROS_STATIC_PEERS": outer_ip}
    hosts = write_params(tmp_path, "hosts.yaml", GOAL_HOSTS)
    composer = write_params(tmp_path, "composer.yaml", composer_params(
        max_observation_age_s=3.0, max_observation_skew_s=1.0, encode_timeout_s=3.0, step_timeout_s=3.0,
        on_fault="hold"))
    host_argv = ["-m", "gpc_ros.nodes.policy_host_node", "--ros-args", "--params-file", hosts, "-r"]
    procs = {"left_host": ros_domain.spawn(["ip", "netns", "exec", ns, "env", *[f"{k}={v}" for k, v in inside.items()],
                                            sys.executable, *host_argv, "__node:=left_host"]),
             "right_host": ros_domain.spawn_python(*host_argv, "__node:=right_host", env=outside),
             "composer": ros_domain.spawn_python("-m", "gpc_ros.nodes.composer_node", "--ros-args", "-r",
                                                 "__node:=composer", "--params-file", composer, "--params-file",
                                                 hosts, env=outside)}
    for key, value in outside.items():
        monkeypatch.setenv(key, value)
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain.domain_id)
    node = Node("netns_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        probe = Probe(node, executor)

        def serving() -> bool:  # one status says both: the last chunk was normal and the left host is up now
            status = probe.last_status()  # (taken together: a fault between two statuses can separate them)
            return len(probe.chunks) >= 3 and status.get("mode") == "normal" and status.get("host.left") == "up"

        def started() -> bool:  # the composer runs and has heard both hosts' announcements
            status = probe.last_status()
            return bool(status) and "not announced" not in (status.get("host.left"), status.get("host.right"))

        # Start-up and serving are bounded separately: the composer's first status came 112 s after the spawn at
        # load 10-12 (three processes importing torch, diffusers and rclpy), close to half of the 240 s that one
        # wait for both used to have; at load 13 and more that start-up alone could use it up
        if not probe.spin_until(started, 420.0, every=probe.publish_pose):
            pytest.fail(f"not started: statuses {probe.status[-3:]}\n{outputs(procs)}")
        if not probe.spin_until(serving, 120.0, every=probe.publish_pose):
            pytest.fail(f"{len(probe.chunks)} chunk(s); statuses {probe.status[-5:]}\n{outputs(procs)}")
        # both parents took part in every step (on_fault hold: a missing left host would give no chunk at all)
        assert used_weights(probe.last_status()) == {"left": 0.5, "right": 0.5}
        # and the left host really is on the other side of the veth (its namespace has only the inner address)
        out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-o", "addr"], capture_output=True, text=True,
                             check=False).stdout
        assert inner_ip in out and outer_ip not in out
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
