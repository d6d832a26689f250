"""The lint gate: ruff (pinned in requirements/python.lock, configured in ruff.toml) finds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Parts already clean (issue 10): the composition core, perception, their nodes, benches and tests.
CLEAN_PATHS = [
    "gpc_ros/compose", "gpc_ros/perception", "gpc_ros/policies/objectives.py", "gpc_ros/nodes/pointcloud_node.py",
    "gpc_ros/nodes/camera_node.py", "bench/bench_compose.py", "bench/bench_pointcloud.py", "test/compose",
    "test/perception", "test/nodes/test_pointcloud_node.py", "test/nodes/test_camera_node.py",
    "test/policies/test_objectives.py", "test/test_lint.py",
    # issue 14 (monitoring)
    "gpc_ros/monitor", "gpc_ros/nodes/monitor_node.py", "gpc_ros/nodes/viewer_node.py",
    "gpc_ros/nodes/recorder_node.py", "test/monitor", "bench/bench_monitor.py",
]


def _ruff(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *paths], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skip(reason="enable once the whole tree is ruff-clean: the integrator runs `ruff check --fix .` after "
                         "merging every branch and fixes the rest (at the last merge of main, areas outside issue "
                         "10's still had findings)")
def test_the_whole_tree_is_ruff_clean() -> None:
    result = _ruff(".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parts_already_cleaned_stay_ruff_clean() -> None:
    result = _ruff(*CLEAN_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr
