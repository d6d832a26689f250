"""Helpers for the graph tests: parameter files, a probe node publishing observations, diagnostics by name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from gpc_ros.paths import config_file
from gpc_ros.testing.spin import spin_until

START_M = (0.554, 0.0, 0.521)
GOAL_HOSTS = yaml.safe_load(config_file("policy_hosts.yaml").read_text())


def composer_params(**overrides) -> dict:
    """composer.yaml's block with ``overrides`` (dotted names for the nested composer.* fields)."""
    block = yaml.safe_load(config_file("composer.yaml").read_text())["composer"]["ros__parameters"]
    for key, value in overrides.items():
        target = block
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    return {"composer": {"ros__parameters": block}}


def write_params(tmp_path: Path, name: str, *blocks: dict) -> str:
    data: dict = {}
    for block in blocks:
        data.update(block)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


class Probe:
    """The test's node: publishes robot state (and frames), records chunks and composer diagnostics."""

    def __init__(self, node, executor) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        self.node, self.executor = node, executor
        self.chunks: list = []
        self.parent_chunks: dict[str, list] = {}
        self.status: list[dict] = []
        self.pose_pubs = {}
        node.create_subscription(MultiDOFJointTrajectory, "/gpc/action_chunk", self.chunks.append, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.PoseStamped = PoseStamped

    def watch_parent(self, name: str) -> None:
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        self.parent_chunks[name] = []
        self.node.create_subscription(MultiDOFJointTrajectory, f"/gpc/parents/{name}/chunk",
                                      self.parent_chunks[name].append, 50)

    def _on_diagnostics(self, msg) -> None:
        for s in msg.status:
            if s.name == "composer_node: composition":
                values = {kv.key: kv.value for kv in s.values}
                self.status.append({"level": s.level, "message": s.message, **values})

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def publish_pose(self, position=START_M, topic: str = "ee_pose", age_s: float = 0.0) -> None:
        from gpc_ros.nodes import conversions

        if topic not in self.pose_pubs:
            self.pose_pubs[topic] = self.node.create_publisher(self.PoseStamped, topic, 10)
        msg = self.PoseStamped()
        msg.header.stamp = conversions.seconds_to_stamp(self.now_s() - age_s)
        msg.header.frame_id = "fr3_link0"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
        msg.pose.orientation.x = 1.0
        self.pose_pubs[topic].publish(msg)

    def spin_until(self, predicate, timeout_s: float, every=None, period_s: float = 0.05) -> bool:
        """Spin (calling ``every()`` each ``period_s``) until ``predicate()``; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        next_tick = 0.0
        while time.monotonic() < deadline:
            if every is not None and time.monotonic() >= next_tick:
                every()
                next_tick = time.monotonic() + period_s
            self.executor.spin_once(timeout_sec=0.02)
            if predicate():
                return True
        return False

    def last_status(self) -> dict:
        return self.status[-1] if self.status else {}

    def set_parameters(self, **values) -> list:
        """SetParametersAtomically on /composer (dotted names as keyword ``a__b`` -> ``a.b``): one result for all
        (several values validated together, e.g. on_fault and fallback_parent)."""
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParametersAtomically, "/composer/set_parameters_atomically")
        assert client.wait_for_service(timeout_sec=30.0), "composer's parameter service missing"
        parameters = [Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()]
        request = SetParametersAtomically.Request(parameters=parameters)
        future = client.call_async(request)
        assert spin_until(self.executor, future.done, 30.0), "no answer to set_parameters"
        self.node.destroy_client(client)
        return [future.result().result]


@pytest.fixture
def probe(listener) -> Probe:
    return Probe(*listener)


def chunk_positions(msg) -> np.ndarray:
    return np.array([[p.transforms[0].translation.x, p.transforms[0].translation.y, p.transforms[0].translation.z]
                     for p in msg.points])


def used_weights(status: dict) -> dict:
    return json.loads(status.get("used_weights", "{}"))
