"""The Foxglove live view, tested with a real WebSocket client (``websockets``, subprotocol foxglove.sdk.v1): the
viewer node runs as a process on an isolated domain, real messages are published on the graph's topics, the client
subscribes to every advertised channel and decodes every message with the protobuf schema the server advertises."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import struct
import threading
import time

import numpy as np
import pytest

from gpc_ros.monitor.description import LinkPoser, mesh_path

CHUNK = np.column_stack([np.linspace(0.4, 0.5, 8), np.linspace(-0.1, 0.1, 8), np.full(8, 0.3)])
Q = np.array([0.1, -0.4, 0.05, -2.1, 0.0, 1.7, 0.8])
WIDTH_M = 0.06
TIMEOUT_S = 90.0
SCENE_IDS = {"composed", "parent/rgb", "envelope", "composition"}
EXPECTED = {"/gpc/scene", "/gpc/points", "/joint_states", "/tf", "/robot_description",
            "/camera/camera/color/image_raw"}


def decoder(channel: dict):
    """bytes -> decoded message, from the channel's advertised schema."""
    if channel["encoding"] == "json":
        return lambda data: json.loads(data)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"]))
    return cls.FromString


class Publisher(threading.Thread):
    """Publishes real messages on the graph's topics every 50 ms until stopped."""

    def __init__(self, node, executor) -> None:
        super().__init__(daemon=True)
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState, PointCloud2
        from trajectory_msgs.msg import MultiDOFJointTrajectory

        from gpc_ros.control.chunk import ActionChunk
        from gpc_ros.nodes import conversions as cv

        self.node, self.executor, self.stop = node, executor, threading.Event()
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        quat = np.tile([1.0, 0, 0, 0], (8, 1))
        chunk = cv.multi_dof_trajectory_from_chunk(ActionChunk.from_arrays(1.0, 0.1, positions_m=CHUNK,
                                                                           quaternions_xyzw=quat))
        rng = np.random.default_rng(0)
        self.points = rng.uniform(0.0, 0.5, (50, 3)).astype(np.float32)
        self.image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        stamp = cv.seconds_to_stamp(1.0)
        joints = JointState(name=list(cv.ARM_JOINT_NAMES) + list(cv.FINGER_JOINT_NAMES),
                            position=list(Q) + [WIDTH_M / 2] * 2)
        joints.header.stamp = stamp
        pose = PoseStamped()
        pose.header.frame_id = "fr3_link0"
        self.items = [
            (node.create_publisher(MultiDOFJointTrajectory, "/gpc/action_chunk", reliable), chunk),
            (node.create_publisher(MultiDOFJointTrajectory, "/gpc/parents/rgb/chunk", reliable), chunk),
            (node.create_publisher(PointCloud2, "/gpc/points", reliable),
             cv.pointcloud2_msg(self.points, stamp, "fr3_link0")),
            (node.create_publisher(Image, "/camera/camera/color/image_raw", reliable),
             cv.rgb_to_image_msg(self.image, stamp, "camera_color_optical_frame")),
            (node.create_publisher(JointState, "joint_states", 10), joints),
        ]
        self.pose_pub, self.pose, self.k = node.create_publisher(PoseStamped, "ee_pose", 10), pose, 0

    def run(self) -> None:
        while not self.stop.is_set():
            for pub, msg in self.items:
                pub.publish(msg)
            p = CHUNK[self.k % 3]
            self.k += 1
            self.pose.pose.position.x, self.pose.pose.position.y, self.pose.pose.position.z = (float(v) for v in p)
            self.pose_pub.publish(self.pose)
            self.executor.spin_once(timeout_sec=0.05)


def start_viewer(ros_domain, port: int):
    proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.viewer_node", "--ros-args", "-p", f"port:={port}",
                                   "-p", "publish_rate_hz:=20.0")
    lines: list[str] = []
    proc.reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
    proc.reader.start()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = [m for line in list(lines) if (m := re.search(r"live view on ws://127\.0\.0\.1:(\d+)", line))]
        if found:
            return proc, int(found[0].group(1)), lines
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the viewer did not start: {''.join(lines)}")


async def watch(port: int) -> dict:
    """Connect, subscribe to every channel, decode until each expected channel delivered content; fetch a mesh."""
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"],
                                  max_size=None) as ws:
        assert ws.subprotocol == "foxglove.sdk.v1"
        channels, subs, decoded, assets, params, statuses = {}, {}, {}, {}, {}, []
        asked_asset = asked_params = False
        deadline = time.monotonic() + TIMEOUT_S
        def complete() -> bool:
            by_topic = {channels[c]["topic"]: msgs for c, msgs in decoded.items()}
            if not (EXPECTED <= set(by_topic) and 7 in assets and params):
                return False  # the parent's topic is discovered within a second: wait for a scene showing it
            return any(SCENE_IDS <= {e.id for e in m.entities} for m in by_topic["/gpc/scene"])

        while time.monotonic() < deadline:
            if complete():
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
            except asyncio.TimeoutError:
                continue
            if isinstance(raw, str):
                msg = json.loads(raw)
                if msg["op"] == "advertise":
                    new = [c for c in msg["channels"] if c["id"] not in channels]
                    for c in new:
                        channels[c["id"]] = {**c, "decode": decoder(c)}
                        subs[len(subs) + 1] = c["id"]
                    await ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                        {"id": sid, "channelId": cid} for sid, cid in subs.items() if cid in {c["id"] for c in new}]}))
                elif msg["op"] == "parameterValues":
                    params.update({p["name"]: p["value"] for p in msg["parameters"]})
                elif msg["op"] == "status":  # the server's errors and warnings, kept for the failure message
                    statuses.append(msg)
                if not asked_params:
                    await ws.send(json.dumps({"op": "getParameters", "parameterNames": ["/robot_description"],
                                              "id": "urdf"}))
                    asked_params = True
                continue
            opcode = raw[0]
            if opcode == 1:  # message data: subscription id, log time, payload
                sub_id, _ = struct.unpack_from("<IQ", raw, 1)
                cid = subs[sub_id]
                decoded.setdefault(cid, []).append(channels[cid]["decode"](raw[13:]))
                topic = channels[cid]["topic"]
                if topic == "/robot_description" and not asked_asset:
                    uri = re.search(r'filename="([^"]+link3\.dae)"', decoded[cid][-1]["data"]).group(1)
                    await ws.send(json.dumps({"op": "fetchAsset", "uri": uri, "requestId": 7}))
                    assets["uri"], asked_asset = uri, True
            elif opcode == 4:  # fetch asset response: request id, status, error length, error, data
                request_id, status, err_len = struct.unpack_from("<IBI", raw, 1)
                assets[request_id] = (status, raw[10 + err_len:])
        return {"channels": channels, "decoded": decoded, "assets": assets, "params": params, "statuses": statuses}


def test_foxglove_client_sees_every_channel(ros_domain, listener):
    node, executor = listener
    proc, port, lines = start_viewer(ros_domain, 0)
    publisher = Publisher(node, executor)
    publisher.start()
    try:
        result = asyncio.run(watch(port))
    finally:
        publisher.stop.set()
        publisher.join(timeout=10)
    by_topic = {result["channels"][cid]["topic"]: msgs for cid, msgs in result["decoded"].items()}
    advertised = sorted((c, v["topic"]) for c, v in result["channels"].items())
    assert EXPECTED <= set(by_topic), (f"missing {EXPECTED - set(by_topic)}; advertised {advertised}; server status "
                                       f"messages {result['statuses']}; viewer output: {''.join(lines)}")
    assert all(len(msgs) >= 1 for msgs in by_topic.values())
    schemas = {c["topic"]: c["schemaName"] for c in result["channels"].values()}
    assert schemas["/gpc/scene"] == "foxglove.SceneUpdate" and schemas["/tf"] == "foxglove.FrameTransforms"

    # the scene: composed and parent paths with the published points, the box, the text
    scenes = [{e.id: e for e in m.entities} for m in by_topic["/gpc/scene"]]
    full = next(s for s in reversed(scenes) if SCENE_IDS <= set(s))
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in full["composed"].lines[0].points], CHUNK)
    assert full["composed"].frame_id == "fr3_link0" and len(full["envelope"].lines[0].points) == 24
    assert full["composition"].texts[0].text  # weights unknown here: the text says so

    cloud = by_topic["/gpc/points"][-1]
    xyz = np.frombuffer(cloud.data, np.float32).reshape(-1, 3)
    np.testing.assert_array_equal(xyz, publisher.points)
    image = by_topic["/camera/camera/color/image_raw"][-1]
    assert (image.width, image.height, image.encoding) == (16, 12, "rgb8")
    np.testing.assert_array_equal(np.frombuffer(image.data, np.uint8).reshape(12, 16, 3), publisher.image)
    joints = by_topic["/joint_states"][-1]
    assert [j.name for j in joints.joints][:7] == [f"fr3_joint{i}" for i in range(1, 8)]
    np.testing.assert_allclose([j.position for j in joints.joints][:7], Q)

    tf = {t.child_frame_id: t for t in by_topic["/tf"][-1].transforms}
    tcp = LinkPoser().poses(Q, WIDTH_M)["fr3_hand_tcp"][0]
    got = tf["fr3_hand_tcp"].translation
    np.testing.assert_allclose([got.x, got.y, got.z], tcp, atol=1e-9)
    assert tf["fr3_hand_tcp"].parent_frame_id == "fr3_link0" and "fr3_leftfinger" in tf

    urdf = by_topic["/robot_description"][-1]["data"]
    assert '<robot name="fr3">' in urdf and result["params"]["/robot_description"] == urdf
    status, data = result["assets"][7]
    assert status == 0 and data == mesh_path(result["assets"]["uri"]).read_bytes()

    proc.send_signal(2)
    proc.wait(timeout=30)
    proc.reader.join(timeout=30)
    assert "Callback failed" not in "".join(lines), "".join(lines)  # the listener handles every callback it gets


def test_port_in_use_is_one_sentence(ros_domain):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.viewer_node", "--port", str(port),
                                       stderr=__import__("subprocess").PIPE)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last == (f"gpc-ros viewer: port {port} on 127.0.0.1 is already in use (another viewer or "
                    f"foxglove_bridge?); choose another one with --port"), err


def test_viewer_config_is_validated():
    from gpc_ros.monitor.foxglove_view import ViewerConfig

    with pytest.raises(ValueError, match="ViewerConfig.port"):
        ViewerConfig(port=70000)
    assert ViewerConfig().host == "127.0.0.1"
