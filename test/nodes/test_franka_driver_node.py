"""franka_driver_node as a real process on its own ROS domain, driving a real franky-sim FR3: state topics,
enable/stop/recover services, a chunk published from the test moving the arm, the running plan on
/gpc/driver_plan, diagnostics, rejected chunks."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.paths import config_file
from gpc_ros.testing.spin import spin_until

pytestmark = pytest.mark.timeout(180)



def call(executor, client, request, timeout_s: float = 20.0):
    assert client.wait_for_service(timeout_sec=timeout_s), f"service {client.srv_name} not available"
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout_s), f"no answer from {client.srv_name}"
    return future.result()



def test_driver_node_streams_state_and_executes_a_published_chunk(ros_domain, listener, franky_sim_fast):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from gpc_ros.control.chunk import ActionChunk
    from gpc_ros.nodes import conversions

    node, executor = listener
    joints: list[JointState] = []
    poses: list[PoseStamped] = []
    diags: list[DiagnosticArray] = []
    node.create_subscription(JointState, "/joint_states", joints.append, 50)
    node.create_subscription(PoseStamped, "/ee_pose", poses.append, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    chunk_pub = node.create_publisher(MultiDOFJointTrajectory, "/gpc/action_chunk", 10)
    proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.franka_driver_node", "--ros-args", "--params-file",
                                   str(config_file("franka_driver.yaml")), "-p", f"robot_host:={franky_sim_fast.host}",
                                   "-p", "watchdog_timeout_s:=5.0", "-p", "diagnostics_period_s:=0.2")
    assert spin_until(executor, lambda: len(joints) >= 20 and len(poses) >= 20, 40.0), (len(joints), proc.poll())
    js = joints[-1]
    assert list(js.name) == [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
    assert poses[-1].header.frame_id == "fr3_link0"
    p0 = np.array([poses[-1].pose.position.x, poses[-1].pose.position.y, poses[-1].pose.position.z])
    o = poses[-1].pose.orientation
    q0 = np.array([o.x, o.y, o.z, o.w])
    goal = p0 + np.array([0.0, 0.04, -0.03])

    def publish_goal_chunk(hold: bool = False) -> None:
        now_s = node.get_clock().now().nanoseconds * 1e-9
        n = 10
        pos = np.tile(goal, (n, 1)) if hold else p0 + np.linspace(0.0, 1.0, n)[:, None] * (goal - p0)
        chunk = ActionChunk.from_arrays(now_s, 0.05, positions_m=pos, quaternions_xyzw=np.tile(q0, (n, 1)),
                                        gripper_width_m=np.full(n, 0.03))
        chunk_pub.publish(conversions.multi_dof_trajectory_from_chunk(chunk))

    def counter(name: str) -> int:
        vals = [kv.value for kv in diags[-1].status[0].values if kv.key == f"interventions.{name}"]
        return int(vals[0]) if vals else 0

    def position() -> np.ndarray:
        p = poses[-1].pose.position
        return np.array([p.x, p.y, p.z])

    # Disabled by default: a chunk does not move the arm, and diagnostics say why.
    assert spin_until(executor, lambda: chunk_pub.get_subscription_count() > 0, 20.0)
    publish_goal_chunk()
    assert spin_until(executor, lambda: diags and counter("refused_disabled") >= 1, 20.0)
    assert "disabled" in diags[-1].status[0].message
    assert np.linalg.norm(position() - p0) < 1e-3

    enable = node.create_client(SetBool, "/franka_driver/enable")
    stop = node.create_client(Trigger, "/franka_driver/stop")
    recover = node.create_client(Trigger, "/franka_driver/recover")
    assert call(executor, enable, SetBool.Request(data=True)).success
    # Like a policy, keep sending (the same) chunk: franky-sim under load runs at 0.1-0.3x real time, and the
    # limits hold on the robot's clock, so one 0.45 s chunk plus the 5 s watchdog may not be enough to arrive.
    publish_goal_chunk()
    node.create_timer(0.5, lambda: publish_goal_chunk(hold=True))
    assert spin_until(executor, lambda: np.linalg.norm(position() - goal) < 0.003, 60.0), position() - goal
    assert spin_until(executor, lambda: abs(2 * joints[-1].position[7] - 0.03) < 0.003, 20.0)

    # A malformed chunk is rejected with a reason and counted; the arm stays put.
    bad = conversions.multi_dof_trajectory_from_chunk(ActionChunk.from_arrays(
        node.get_clock().now().nanoseconds * 1e-9, 0.05, positions_m=np.tile(goal, (3, 1)),
        quaternions_xyzw=np.tile(q0, (3, 1))))
    bad.points[1].transforms[0].translation.x = float("nan")
    chunk_pub.publish(bad)

    assert spin_until(executor, lambda: counter("rejected_messages") >= 1, 20.0)

    # A second chunk publisher: a WARN on /diagnostics naming the count.
    second = node.create_publisher(MultiDOFJointTrajectory, "/gpc/action_chunk", 10)
    assert spin_until(executor, lambda: any("2 publishers on /gpc/action_chunk" in s.message
                                            for s in diags[-1].status), 20.0), diags[-1].status[0].message
    node.destroy_publisher(second)

    # Stop (a planned stop, answered at rest with time and distance) and recover can be called at the same time:
    # the services sit in their own callback groups on a MultiThreadedExecutor, a stop never waits for a recover.
    futures = [stop.call_async(Trigger.Request()), recover.call_async(Trigger.Request())]
    assert spin_until(executor, lambda: all(f.done() for f in futures), 30.0)
    answer = futures[0].result()
    assert answer.success and "stopped (planned)" in answer.message, answer.message
    answer = call(executor, stop, Trigger.Request())
    assert answer.success, answer.message
    assert spin_until(executor, lambda: any("disabled" in s.message for s in diags[-1].status), 20.0)
    assert call(executor, recover, Trigger.Request()).success
    assert proc.poll() is None

    # The running plan on /gpc/driver_plan (transient local: a late subscriber gets the current one): none after
    # the stop; enabled again, the blended chunks, ending at the goal, with the gripper width.
    plans: list[MultiDOFJointTrajectory] = []
    node.create_subscription(MultiDOFJointTrajectory, conversions.DRIVER_PLAN_TOPIC, plans.append,
                             conversions.driver_plan_qos())
    assert spin_until(executor, lambda: bool(plans), 20.0) and len(plans[-1].points) == 0
    assert call(executor, enable, SetBool.Request(data=True)).success
    assert spin_until(executor, lambda: len(plans[-1].points) > 0, 30.0)
    running = conversions.running_plan_from_msg(plans[-1])
    assert np.linalg.norm(running.actions[-1, :3] - goal) < 1e-9 and running.actions.shape[1] == 4


# --- message conventions (docs/messages.md, "Driver"): pure conversions -------------------------------------------

def _cartesian_chunk(gripper: bool):
    from gpc_ros.control.chunk import ActionChunk

    n = 5
    pos = np.array([0.5, 0.0, 0.4]) + 0.01 * np.arange(n)[:, None]
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    return ActionChunk.from_arrays(1234.5, 0.05, positions_m=pos, quaternions_xyzw=quat,
                                   gripper_width_m=np.linspace(0.08, 0.0, n) if gripper else None)


@pytest.mark.parametrize("gripper", [False, True])
def test_cartesian_chunk_round_trips_through_multi_dof_trajectory(gripper):
    from gpc_ros.nodes import conversions

    chunk = _cartesian_chunk(gripper)
    msg = conversions.multi_dof_trajectory_from_chunk(chunk)
    assert msg.header.frame_id == "fr3_link0" and msg.joint_names[0] == "fr3_hand_tcp"
    back = conversions.chunk_from_multi_dof_trajectory(msg)
    assert back.start_time_s == pytest.approx(chunk.start_time_s, abs=1e-6)
    assert back.dt_s == pytest.approx(chunk.dt_s, abs=1e-9)
    np.testing.assert_allclose(back.positions_m, chunk.positions_m)
    np.testing.assert_allclose(back.quaternions_xyzw, chunk.quaternions_xyzw)
    if gripper:
        np.testing.assert_allclose(back.gripper_width_m, chunk.gripper_width_m)
    else:
        assert back.gripper_width_m is None


@pytest.mark.parametrize("spoil, fragment", [
    (lambda m: setattr(m.header, "frame_id", "world"), "frame_id"),
    (lambda m: setattr(m, "joint_names", ["tool0"]), "joint_names"),
    (lambda m: setattr(m.points[2].time_from_start, "nanosec", 123_000_000), "evenly spaced"),
    (lambda m: m.points[1].transforms.pop(), "transforms"),
    (lambda m: setattr(m, "points", []), "at least one point"),
])
def test_malformed_chunk_messages_are_rejected_with_a_reason(spoil, fragment):
    from gpc_ros.control.chunk import ChunkRejectedError
    from gpc_ros.nodes import conversions

    msg = conversions.multi_dof_trajectory_from_chunk(_cartesian_chunk(gripper=True))
    spoil(msg)
    with pytest.raises(ChunkRejectedError, match=fragment):
        conversions.chunk_from_multi_dof_trajectory(msg)


def test_joint_trajectory_in_any_joint_order_with_gripper():
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from gpc_ros.nodes import conversions

    names = [f"fr3_joint{i}" for i in (7, 6, 5, 4, 3, 2, 1)] + ["fr3_gripper_width"]
    msg = JointTrajectory(joint_names=names)
    msg.header.stamp = conversions.seconds_to_stamp(10.0)
    for k in range(3):
        msg.points.append(JointTrajectoryPoint(positions=[float(7 - i) + k for i in range(7)] + [0.04],
                                               time_from_start=Duration(sec=0, nanosec=100_000_000 * k)))
    chunk = conversions.chunk_from_joint_trajectory(msg)
    np.testing.assert_allclose(chunk.joint_positions_rad[0], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_allclose(chunk.gripper_width_m, 0.04)
    assert chunk.dt_s == pytest.approx(0.1) and chunk.start_time_s == pytest.approx(10.0)
