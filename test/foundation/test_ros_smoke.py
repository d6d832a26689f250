"""Two real rclpy processes talk to each other on this test's own ROS domain."""

from pathlib import Path

HERE = Path(__file__).parent


def test_two_rclpy_processes_round_trip(ros_domain):
    pong = ros_domain.spawn_python(str(HERE / "ros_pingpong.py"), "pong")
    ping = ros_domain.spawn_python(str(HERE / "ros_pingpong.py"), "ping")
    out, _ = ping.communicate(timeout=60)
    assert ping.returncode == 0, out
    assert "pong:hello" in out
    pong.kill()


def test_domains_are_isolated(ros_domain):
    """A process on another domain must NOT hear this domain's traffic (the isolation the fixture promises)."""
    other = (ros_domain.domain_id % 101) + 1
    pong = ros_domain.spawn_python(str(HERE / "ros_pingpong.py"), "pong", env={"ROS_DOMAIN_ID": str(other)})
    ping = ros_domain.spawn_python(str(HERE / "ros_pingpong.py"), "ping")
    # ping gives up after its own 30 s timeout; 3 s is plenty to show no reply comes when domains differ
    ping_short = ros_domain.spawn_python("-c", f"import runpy,sys; sys.argv=['x','ping']; "
                                         f"import importlib.util as u; "
                                         f"s=u.spec_from_file_location('p', r'{HERE / 'ros_pingpong.py'}'); "
                                         f"m=u.module_from_spec(s); s.loader.exec_module(m); "
                                         f"sys.exit(m.main('ping', 3.0))")
    ping.kill()
    out, _ = ping_short.communicate(timeout=60)
    assert ping_short.returncode == 1, out
    pong.kill()


def test_in_process_context_uses_the_leased_domain(rclpy_context, ros_domain):
    assert rclpy_context.get_domain_id() == ros_domain.domain_id
