"""Shared fixtures: the gpc_ros plugin (ROS domains, franky-sim) plus an in-process rclpy context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["gpc_ros.testing.pytest_plugin"]


@pytest.fixture
def rclpy_context(ros_domain) -> Iterator[object]:
    """An initialised rclpy Context on this test's own domain (shut down afterwards)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain.domain_id)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def listener(rclpy_context):
    """``(node, executor)``: an in-process node on this test's domain to subscribe / call services with."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("gpc_test_listener", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
