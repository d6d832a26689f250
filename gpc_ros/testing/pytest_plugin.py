"""pytest fixtures: isolated ROS 2 domains and franky-sim servers (see :mod:`gpc_ros.testing`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from gpc_ros.leases import acquire
from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env
from gpc_ros.sim.franky_sim_process import FrankySimProcess, reset_scheduling


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (tests over ~30 s), so ``-m 'not slow'`` and ``--strict-markers`` work."""
    config.addinivalue_line("markers", "slow: takes more than ~30 s; deselect with -m 'not slow'")


@pytest.fixture(autouse=True)
def _normal_scheduling() -> Iterator[None]:
    """A test that calls franky on pytest's thread leaves it at real-time priority (libfranka's doing): undo it."""
    yield
    reset_scheduling()


@dataclass
class RosDomain:
    """A ROS 2 domain leased for one test; ``env`` is the environment for processes joining it."""

    domain_id: int
    env: dict[str, str] = field(repr=False)
    children: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def spawn(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a child process in this domain; it is killed at the end of the test if still running."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(list(argv), env={**self.env, **kwargs.pop("env", {})}, **kwargs)
        self.children.append(proc)
        return proc

    def spawn_python(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start ``sys.executable *args`` (e.g. ``"-m", "gpc_ros.nodes.x"``) in this domain, as :meth:`spawn`."""
        return self.spawn([sys.executable, *args], **kwargs)


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[RosDomain]:
    """This test's own ROS domain (no other test or run on this machine uses it at the same time)."""
    with acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1)) as lease:
        env = graph_env(lease.value)
        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                    "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
            monkeypatch.setenv(key, env[key])
        domain = RosDomain(lease.value, env)
        try:
            yield domain
        finally:
            for proc in domain.children:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)


@pytest.fixture
def franky_sim() -> Iterator[FrankySimProcess]:
    """A running franky-sim FR3 (paced at real time) on its own loopback address: ``franky.Robot(franky_sim.host)``."""
    with FrankySimProcess(pace="realtime") as sim:
        yield sim


@pytest.fixture
def franky_sim_fast() -> Iterator[FrankySimProcess]:
    """Like ``franky_sim`` but stepping as fast as the CPU allows (franky follows the simulated clock)."""
    with FrankySimProcess(pace="fast") as sim:
        yield sim
