"""franky connects to a real franky-sim server (libfranka protocol on a loopback address) and reads the robot."""

import franky
import numpy as np
import pytest

from gpc_ros.sim.franky_sim_process import FrankySimProcess

FR3_HOME_Q = np.array([0.0, 0.0, 0.0, -np.pi / 2, 0.0, np.pi / 2, np.pi / 4])


def test_franky_reads_joint_state_and_gripper(franky_sim):
    robot = franky.Robot(franky_sim.host, realtime_config=franky.RealtimeConfig.Ignore)
    q = np.asarray(robot.current_joint_state.position)
    assert q.shape == (7,)
    np.testing.assert_allclose(q, FR3_HOME_Q, atol=0.02)  # franky-sim starts at the FR3 home pose
    gripper = franky.Gripper(franky_sim.host)
    assert 0.0 <= gripper.width <= 0.081


def test_franky_moves_the_simulated_arm(franky_sim_fast):
    robot = franky.Robot(franky_sim_fast.host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.2
    target = FR3_HOME_Q + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    robot.move(franky.JointMotion(target.tolist()))
    np.testing.assert_allclose(robot.current_joint_state.position, target, atol=0.03)


def test_two_servers_get_distinct_addresses():
    with FrankySimProcess(pace="realtime") as a, FrankySimProcess(pace="realtime") as b:
        assert a.host != b.host
        for sim in (a, b):
            robot = franky.Robot(sim.host, realtime_config=franky.RealtimeConfig.Ignore)
            assert len(robot.current_joint_state.position) == 7


def test_killed_server_is_reported_and_restarts_on_the_same_address(franky_sim_fast):
    host = franky_sim_fast.host
    franky_sim_fast.kill()
    assert not franky_sim_fast.alive
    with pytest.raises(Exception):
        franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    franky_sim_fast.start()
    assert franky_sim_fast.host == host
    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    assert len(robot.current_joint_state.position) == 7
