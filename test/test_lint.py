"""The lint gate: ruff (pinned in requirements/python.lock, configured in ruff.toml) finds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Parts already clean (issue 10): the composition core, perception, their nodes, benches and tests.
CLEAN_PATHS = [
    "gpc_ros/compose", "gpc_ros/perception", "gpc_ros/policies/objectives.py", "gpc_ros/nodes/pointcloud_node.py",
    "gpc_ros/nodes/camera_node.py", "test/compose", "test/perception", "test/nodes/test_pointcloud_node.py",
    "test/nodes/test_camera_node.py", "test/test_lint.py",
    # issue 14 (monitoring)
    "gpc_ros/monitor", "gpc_ros/nodes/monitor_node.py", "gpc_ros/nodes/viewer_node.py",
    "gpc_ros/nodes/recorder_node.py", "test/monitor",
    # issue 10 lint pass: the top-level modules, the policies (except the training / dataset / LeRobot parts),
    # the test helpers, every bench, the foundation and policy tests, the requirements script
    "gpc_ros/__init__.py", "gpc_ros/action_space.py", "gpc_ros/demo", "gpc_ros/doctor.py", "gpc_ros/leases.py",
    "gpc_ros/paths.py", "gpc_ros/ros_env.py", "gpc_ros/testing", "gpc_ros/policies/__init__.py",
    "gpc_ros/policies/adapter.py", "gpc_ros/policies/checkpoint.py", "gpc_ros/policies/chunk_policy.py",
    "gpc_ros/policies/config_io.py", "gpc_ros/policies/ema.py", "gpc_ros/policies/evaluation.py",
    "gpc_ros/policies/factory.py", "gpc_ros/policies/normalization.py", "gpc_ros/policies/presets.py",
    "gpc_ros/policies/synthetic.py", "gpc_ros/policies/unet1d.py", "gpc_ros/policies/diffusion",
    "gpc_ros/policies/dp3", "gpc_ros/policies/flow", "gpc_ros/policies/encoders", "bench", "test/conftest.py",
    "test/foundation", "test/policies", "requirements",
    # issue 10 lint pass: the simulated cell and its tests (gpc_ros/action_space.py is listed above)
    "gpc_ros/sim", "test/sim",
    # issue 10 lint pass 2: the node graph, its nodes (except the Franka driver), the CLI, the launch file, the
    # training / dataset / LeRobot parts of the policies and the graph tests
    "gpc_ros/graph", "gpc_ros/nodes/__init__.py", "gpc_ros/nodes/composer_node.py", "gpc_ros/nodes/conversions.py",
    "gpc_ros/nodes/parameters.py", "gpc_ros/nodes/policy_host_node.py", "gpc_ros/nodes/spin.py", "gpc_ros/cli.py",
    "launch", "gpc_ros/policies/training.py", "gpc_ros/policies/train_cli.py", "gpc_ros/policies/dataset.py",
    "gpc_ros/policies/lerobot", "test/graph",
    # issue 10 lint pass: the driver core and node, the benchmark, the policy registry and their tests
    "gpc_ros/control", "gpc_ros/benchmark", "gpc_ros/nodes/franka_driver_node.py", "gpc_ros/policies/registry.py",
    "test/control", "test/benchmark", "test/nodes/test_franka_driver_node.py",
]


def _ruff(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_whole_tree_is_ruff_clean() -> None:
    result = _ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parts_already_cleaned_stay_ruff_clean() -> None:
    result = _ruff(*CLEAN_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr
