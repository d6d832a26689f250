"""The repository builds as a ROS 2 ament_python package with colcon, and lands where ROS tools look for it."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _console_scripts() -> list[str]:
    """Executables declared in setup.py (the NODES dict + gpc-ros), read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    nodes = next(n.value for n in ast.walk(tree)
                 if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "NODES")
    return [k.value for k in nodes.keys] + ["gpc-ros"]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    if shutil.which("colcon", path=str(Path(sys.executable).parent)) is None and shutil.which("colcon") is None:
        pytest.fail("colcon is not installed in this environment "
                    "(requirements/python.in lists colcon-common-extensions)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "gpc_ros"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or "colcon"
    listed = subprocess.run([colcon, "list", "--base-paths", "src"], cwd=ws, capture_output=True, text=True)
    assert "(ros.ament_python)" in listed.stdout, \
        f"colcon does not see an ament_python package:\n{listed.stdout}{listed.stderr}"
    build = subprocess.run([colcon, "build", "--base-paths", "src", "--event-handlers", "console_direct-"],
                           cwd=ws, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    return ws / "install"


def test_share_and_lib_layout(colcon_install):
    share = colcon_install / "gpc_ros" / "share" / "gpc_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_profile.xml").is_file()
    for folder in ("launch", "config", "urdf"):
        expected = sorted(p.name for p in (REPO / folder).glob("*")
                          if p.is_file() and (folder != "launch" or p.suffix == ".py"))
        assert sorted(p.name for p in (share / folder).glob("*")) == expected, folder
    index = colcon_install / "gpc_ros" / "share" / "ament_index" / "resource_index" / "packages" / "gpc_ros"
    assert index.is_file()
    lib = colcon_install / "gpc_ros" / "lib" / "gpc_ros"
    for exe in _console_scripts():
        assert os.access(lib / exe, os.X_OK), f"{exe} missing from lib/gpc_ros (ros2 run/launch look there)"


def test_ament_index_finds_package_after_sourcing(colcon_install):
    script = (f"source {colcon_install}/setup.bash && {sys.executable} -c "
              "'from ament_index_python.packages import get_package_share_directory as g; "
              "from gpc_ros.paths import share_dir; print(g(\"gpc_ros\")); print(share_dir())'")
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = str(colcon_install / "gpc_ros" / "share" / "gpc_ros")
    assert out.stdout.split() == [expected, expected]


def test_installed_cli_runs(colcon_install):
    exe = colcon_install / "gpc_ros" / "lib" / "gpc_ros" / "gpc-ros"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout
