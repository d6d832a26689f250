"""The GPC core never imports rclpy (not even lazily)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import gpc_ros.compose

PACKAGE = pathlib.Path(gpc_ros.compose.__file__).parent


def test_no_module_mentions_an_rclpy_import() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+rclpy\b|import_module\(\s*['\"]rclpy", re.MULTILINE)
    offenders = [p.name for p in PACKAGE.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_importing_and_composing_loads_no_rclpy() -> None:
    code = (
        "import sys, torch\n"
        "from gpc_ros.compose import Composer, VPTime, make_vp_scheduler\n"
        "from gpc_ros.compose.analytic import GaussianParent\n"
        "p = GaussianParent('a', 'epsilon', VPTime.from_scheduler(make_vp_scheduler()), 4, 2)\n"
        "c = Composer([p]); c.compose(c.encode([torch.zeros(1, 4, 2)]), [1.0], generator=0)\n"
        "import gpc_ros.compose.search, gpc_ros.compose.warm_start\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
