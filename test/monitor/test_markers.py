"""Markers: for a known chunk, the frames, namespaces, colours and point counts; the monitor node as a real process
turns the graph's topics into that MarkerArray."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpc_ros.monitor.scene import (
    COMPOSED_COLOR,
    ENVELOPE_COLOR,
    EXECUTED_COLOR,
    PARENT_PALETTE,
    Box,
    LineStrip,
    Scene,
    SceneConfig,
    Text,
    parent_colors,
)

CHUNK = np.column_stack([np.linspace(0.4, 0.5, 8), np.linspace(-0.1, 0.1, 8), np.full(8, 0.3)])
RGB_CHUNK = CHUNK + [0.0, 0.02, 0.0]
PCD_CHUNK = CHUNK - [0.0, 0.02, 0.0]


def known_scene() -> Scene:
    scene = Scene(SceneConfig())
    scene.set_composed(CHUNK)
    scene.set_parent("rgb", RGB_CHUNK)
    scene.set_parent("pcd", PCD_CHUNK)
    for p in CHUNK[:4]:
        scene.add_executed(p)
    scene.add_executed(CHUNK[3] + 1e-4)  # below executed_min_step_m: not kept
    scene.set_envelope((0.25, -0.4, 0.05), (0.75, 0.4, 0.7))
    scene.set_composition("convex", {"rgb": 0.7, "pcd": 0.3})
    return scene


def test_scene_primitives_for_a_known_chunk():
    prims = {p.ns: p for p in known_scene().primitives()}
    assert list(prims) == ["composed", "parent/pcd", "parent/rgb", "executed", "envelope", "composition"]
    assert isinstance(prims["composed"], LineStrip) and prims["composed"].color == COMPOSED_COLOR
    np.testing.assert_array_equal(prims["composed"].points_m, CHUNK)
    # alphabetical: pcd gets the first palette colour, rgb the second
    assert prims["parent/pcd"].color == PARENT_PALETTE[0] and prims["parent/rgb"].color == PARENT_PALETTE[1]
    np.testing.assert_array_equal(prims["parent/rgb"].points_m, RGB_CHUNK)
    assert prims["executed"].color == EXECUTED_COLOR and len(prims["executed"].points_m) == 4
    box = prims["envelope"]
    assert isinstance(box, Box) and box.color == ENVELOPE_COLOR
    edges = box.edges_m().reshape(12, 2, 3)
    lengths = sorted(np.round(np.linalg.norm(edges[:, 0] - edges[:, 1], axis=1), 6))
    assert lengths == [0.5] * 4 + [0.65] * 4 + [0.8] * 4  # z, x, y edges of the 0.5 x 0.8 x 0.65 m box
    assert isinstance(prims["composition"], Text) and prims["composition"].text == "convex  pcd=0.30  rgb=0.70"
    assert len({tuple(c) for c in PARENT_PALETTE} | {COMPOSED_COLOR, EXECUTED_COLOR, ENVELOPE_COLOR}) == \
        len(PARENT_PALETTE) + 3
    assert parent_colors([f"p{i}" for i in range(8)])["p7"] == PARENT_PALETTE[1]  # wraps around


def test_marker_array_frames_colours_counts():
    from visualization_msgs.msg import Marker

    from gpc_ros.nodes.conversions import marker_array_from_primitives, seconds_to_stamp

    msg = marker_array_from_primitives(known_scene().primitives(), seconds_to_stamp(5.0))
    by_ns = {m.ns: m for m in msg.markers}
    assert len(msg.markers) == 6 and all(m.header.frame_id == "fr3_link0" for m in msg.markers)
    assert all(m.action == Marker.ADD and m.id == 0 and m.pose.orientation.w == 1.0 for m in msg.markers)
    composed = by_ns["composed"]
    assert composed.type == Marker.LINE_STRIP and len(composed.points) == 8
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in composed.points], CHUNK)
    assert (composed.color.r, composed.color.g, composed.color.b, composed.color.a) == pytest.approx(COMPOSED_COLOR)
    rgb = by_ns["parent/rgb"].color
    assert (rgb.r, rgb.g, rgb.b, rgb.a) == pytest.approx(PARENT_PALETTE[1])
    assert by_ns["envelope"].type == Marker.LINE_LIST and len(by_ns["envelope"].points) == 24
    assert by_ns["executed"].type == Marker.LINE_STRIP and len(by_ns["executed"].points) == 4
    text = by_ns["composition"]
    assert text.type == Marker.TEXT_VIEW_FACING and text.text == "convex  pcd=0.30  rgb=0.70" and text.scale.z > 0


def test_monitor_node_publishes_the_composition(ros_domain, listener):
    """The monitor node as a process. A node named ``composer`` declaring the composer node's weight parameters
    (``parents``, ``weights``, ``composer.operator``; gpc_ros.nodes.composer_node) changes them at run time
    (the whole composer needs hosts and checkpoints, which this test is not about); the chunks are real messages
    on the documented topics."""
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from trajectory_msgs.msg import MultiDOFJointTrajectory
    from visualization_msgs.msg import MarkerArray

    from gpc_ros.control.chunk import ActionChunk
    from gpc_ros.nodes import conversions as cv

    node, executor = listener
    proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.monitor_node", "--ros-args", "-p", "publish_rate_hz:=20.0")
    from rclpy.node import Node
    composer = Node("composer", context=node.context, parameter_overrides=[])
    composer.declare_parameter("weights", [0.7, 0.3])
    composer.declare_parameter("parents", ["rgb", "pcd"])
    composer.declare_parameter("composer.operator", "convex")
    executor.add_node(composer)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {t: node.create_publisher(MultiDOFJointTrajectory, t, qos)
            for t in ("/gpc/action_chunk", "/gpc/parents/rgb/chunk", "/gpc/parents/pcd/chunk")}
    from geometry_msgs.msg import PoseStamped
    pose_pub = node.create_publisher(PoseStamped, "ee_pose", 10)
    received: list[MarkerArray] = []
    node.create_subscription(MarkerArray, "/gpc/markers", received.append, qos)

    def chunk_msg(pos):
        quat = np.tile([1.0, 0, 0, 0], (len(pos), 1))
        return cv.multi_dof_trajectory_from_chunk(ActionChunk.from_arrays(10.0, 0.1, positions_m=pos,
                                                                          quaternions_xyzw=quat))

    def latest():
        return {m.ns: m for m in received[-1].markers} if received else {}

    deadline = time.monotonic() + 60.0
    changed = False
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        for topic, pos in (("/gpc/action_chunk", CHUNK), ("/gpc/parents/rgb/chunk", RGB_CHUNK),
                           ("/gpc/parents/pcd/chunk", PCD_CHUNK)):
            pubs[topic].publish(chunk_msg(pos))
        for p in CHUNK[:3]:
            snap = type("S", (), {"ee_position_m": p, "ee_quaternion_xyzw": np.array([1.0, 0, 0, 0])})
            pose_pub.publish(cv.pose_stamped_from_snapshot(snap, cv.seconds_to_stamp(10.0)))
        ms = latest()
        if not changed and ms.get("composition") and "rgb=0.70" in ms["composition"].text:
            composer.set_parameters([Parameter("weights", value=[0.2, 0.8])])
            changed = True
        if changed and {"composed", "parent/rgb", "parent/pcd", "executed"} <= set(ms) and \
                ms["composition"].text == "convex  pcd=0.80  rgb=0.20":
            break
    else:
        proc.kill()
        raise AssertionError(f"markers incomplete after 60 s: {sorted(latest())}, text "
                             f"{latest().get('composition').text if latest().get('composition') else None}; "
                             f"monitor output: {proc.communicate()[0]}")
    ms = latest()
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in ms["composed"].points], CHUNK)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in ms["parent/pcd"].points], PCD_CHUNK)
    c = ms["parent/pcd"].color
    assert (c.r, c.g, c.b, c.a) == pytest.approx(PARENT_PALETTE[0])
    executed = np.array([[p.x, p.y, p.z] for p in ms["executed"].points])  # the 3 poses, published in a loop
    nearest = np.linalg.norm(executed[:, None] - CHUNK[None, :3], axis=2)
    assert len(executed) >= 3 and np.all(nearest.min(axis=1) < 1e-9)
    assert set(np.argmin(nearest, axis=1)) == {0, 1, 2}
    assert len(ms["envelope"].points) == 24
    assert all(m.header.frame_id == "fr3_link0" for m in ms.values())
    executor.remove_node(composer)
    composer.destroy_node()


def test_rviz_config_shows_the_documented_topics():
    import yaml

    from gpc_ros.paths import share_dir

    config = yaml.safe_load((share_dir() / "config" / "gpc.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "fr3_link0"
    topics = {d["Class"]: d.get("Topic", d.get("Description Topic", {})).get("Value") for d in manager["Displays"]}
    assert topics["rviz_default_plugins/MarkerArray"] == "/gpc/markers"
    assert topics["rviz_default_plugins/PointCloud2"] == "/gpc/points"
    assert topics["rviz_default_plugins/RobotModel"] == "/robot_description"
    assert topics["rviz_default_plugins/Image"] == "/camera/camera/color/image_raw"


def test_monitor_yaml_holds_exactly_the_nodes_parameters(ros_domain):
    """config/monitor.yaml declares every parameter of both nodes and nothing else (the nodes list theirs)."""
    import yaml

    from gpc_ros.paths import share_dir

    data = yaml.safe_load((share_dir() / "config" / "monitor.yaml").read_text())
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from gpc_ros.nodes.monitor_node import MonitorNode
    from gpc_ros.nodes.viewer_node import ViewerNode

    builtin = {"use_sim_time", "start_type_description_service"}  # every rclpy node has these
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain.domain_id)
    try:
        for key, cls, overrides in (("/**/monitor_node", MonitorNode, []),
                                    ("/**/viewer_node", ViewerNode, [Parameter("port", value=0)])):
            node = cls(context=context, parameter_overrides=overrides)
            declared = set(node._parameters) - builtin
            assert declared == set(data[key]["ros__parameters"]), key
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
