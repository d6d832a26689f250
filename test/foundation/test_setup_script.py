"""The README's set-up path (./run) is idempotent and stops bad environments with one clear sentence."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("GPC_VENV", REPO / ".venv"))


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "run"), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_setup_twice_is_a_no_op():
    """The set-up that got us here already ran; running it again must change nothing and install nothing."""
    stamp = VENV / ".gpc_ros-stamp"
    before = stamp.read_text()
    out = _run("setup")
    assert out.returncode == 0, out.stderr
    assert "installing" not in out.stdout + out.stderr
    assert stamp.read_text() == before


def test_unsupported_python_is_one_clear_sentence(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\necho 3.9\n")
    fake.chmod(0o755)
    out = _run("setup", env={"PYTHON": str(fake), "ROS_DISTRO": "", "GPC_VENV": str(tmp_path / "venv")})
    assert out.returncode != 0
    assert "Python 3.11 is required" in out.stderr and "3.9" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "venv").exists()


def test_no_package_index_is_one_clear_sentence(tmp_path):
    offline = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
               "PIP_NO_INDEX": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_CONFIG_FILE": os.devnull,
               "GPC_VENV": str(tmp_path / "venv"), "ROS_DISTRO": ""}
    out = _run("setup", env=offline)
    assert out.returncode != 0
    assert "Check network access to the Python package index" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_verb_prints_usage():
    out = _run("frobnicate")
    assert out.returncode == 2 and "usage: ./run" in out.stdout


def test_whole_stack_imports_in_the_set_up_environment():
    """The issue's check: rclpy, torch, open3d, pyrealsense2, franky, franky_sim, rosbags, cv2 import together."""
    import sys

    code = "import rclpy, torch, open3d, pyrealsense2, franky, franky_sim, rosbags, cv2, diffusers; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr
    doctor = subprocess.run([sys.executable, "-m", "gpc_ros.cli", "doctor"], capture_output=True, text=True,
                            timeout=300)
    assert doctor.returncode == 0 and "all imports ok" in doctor.stdout, doctor.stdout


def test_missing_apt_privilege_is_one_clear_sentence():
    """A user without root or password-less sudo is told which packages to install, before anything else happens."""
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        import pytest

        pytest.skip("needs root and setpriv to run the set-up as an unprivileged user")
    # the unprivileged user must reach the script: a world-readable copy (the clone may sit in a 0700 folder)
    import tempfile

    public = Path(tempfile.mkdtemp(prefix="gpc-apt-"))
    try:
        public.chmod(0o755)
        shutil.copy2(REPO / "run", public / "run")
        env = {**os.environ, "GPC_APT_PACKAGES": "gpc-ros-no-such-package", "GPC_VENV": str(public / "venv"),
               "ROS_DISTRO": "", "HOME": str(public)}
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(public / "run"),
                              "setup"], cwd=public, capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode != 0
        assert "apt packages missing: gpc-ros-no-such-package" in out.stderr and "sudo apt-get install" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (public / "venv").exists()
    finally:
        shutil.rmtree(public, ignore_errors=True)
