"""Sim frames through the real nodes: a served push_red cell -> camera_node (source sim) -> pointcloud_node gives
clouds in fr3_link0 with the table at its height and the cubes where the cell put them."""

from __future__ import annotations

import numpy as np

from gpc_ros.sim.cameras import camera_to_base
from gpc_ros.sim.franky_sim_process import FrankySimProcess
from gpc_ros.sim.tasks import get_task
from gpc_ros.testing.spin import spin_until


def _fmt(values) -> str:
    return "[" + ",".join(f"{v:.9f}" for v in values) + "]"


def test_camera_node_and_pointcloud_node_on_the_sim_cell(ros_domain, rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from gpc_ros.nodes import conversions

    task = get_task("push_red")
    xyz, quat = camera_to_base("front")
    with FrankySimProcess(pace="realtime", task="push_red") as sim:
        ros_domain.spawn_python("-m", "gpc_ros.nodes.camera_node", "--ros-args", "-p", "source:=sim",
                                "-p", "camera_name:=front", "-p", f"sim_host:={sim.host}", "-p", "width:=320",
                                "-p", "height:=240", "-p", "fps:=10")
        ros_domain.spawn_python("-m", "gpc_ros.nodes.pointcloud_node", "--ros-args", "-p", "camera_names:=[front]",
                                "-p", "num_points:=1024", "-p", "output_topic:=/test/points",
                                "-p", f"front.camera_to_base_xyz_m:={_fmt(xyz)}",
                                "-p", f"front.camera_to_base_quat_xyzw:={_fmt(quat)}")
        node = Node("sim_cloud_listener", context=rclpy_context)
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        clouds, images, infos = [], [], []
        node.create_subscription(PointCloud2, "/test/points", clouds.append, qos_profile_sensor_data)
        node.create_subscription(Image, "/camera/front/color/image_raw", images.append, qos_profile_sensor_data)
        node.create_subscription(CameraInfo, "/camera/front/color/camera_info", infos.append, qos_profile_sensor_data)
        try:
            assert spin_until(executor, lambda: len(clouds) >= 2 and images and infos, 120.0), (
                len(clouds), len(images), len(infos), sim.log_text())
        finally:
            executor.shutdown()
            node.destroy_node()
    info = infos[-1]
    assert (info.width, info.height) == (320, 240) and info.header.frame_id == "front_color_optical_frame"
    assert images[-1].encoding == "rgb8"
    msg = clouds[-1]
    assert msg.header.frame_id == "fr3_link0" and msg.width == 1024
    points, _ = conversions.pointcloud2_to_numpy(msg)
    layout = task.sample_layout(0)  # where the served cell puts the cubes at start
    near_cube = np.zeros(len(points), bool)
    for pose in layout.values():
        near_cube |= np.linalg.norm(points[:, :2] - np.array(pose.position_m[:2]), axis=1) < 0.05
    low = points[:, 2] < 0.1
    table = points[low & ~near_cube]
    assert len(table) > 300
    # the table top is z = 0 in fr3_link0: 1 mm depth quantisation (16UC1) and a 1 cm voxel
    np.testing.assert_allclose(table[:, 2], 0.0, atol=0.004)
    for pose in layout.values():  # each cube's top face at 5 cm, where the cell placed it
        top = points[(np.linalg.norm(points[:, :2] - np.array(pose.position_m[:2]), axis=1) < 0.03)
                     & (points[:, 2] > 0.035) & (points[:, 2] < 0.06)]
        assert len(top) >= 3
        np.testing.assert_allclose(top[:, 2].max(), 2 * task.cube_half_size_m, atol=0.006)
