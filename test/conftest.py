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
