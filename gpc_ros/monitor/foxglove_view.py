"""The live view without a ROS install: a Foxglove WebSocket server (``foxglove-sdk``) carrying the graph's content.

Open it in the Foxglove app (desktop or web): *Open connection* -> *Foxglove WebSocket* -> ``ws://127.0.0.1:8765``
(the client must speak subprotocol ``foxglove.sdk.v1``). Channels (all advertised with Foxglove's protobuf schemas
except ``/robot_description``, JSON):

=============================================  =========================  =============================================
channel                                        schema                     content
=============================================  =========================  =============================================
``/gpc/scene``                                 ``foxglove.SceneUpdate``   paths, envelope box, weights text
                                                                          (entities = :mod:`gpc_ros.monitor.scene`)
``/gpc/points``                                ``foxglove.PointCloud``    the point cloud (x, y, z float32 [+ rgb])
``/camera/<n>/color/image_raw``                ``foxglove.RawImage``      colour images (rgb8)
``/joint_states``                              ``foxglove.JointStates``   fr3_joint1..7 (+ fingers)
``/tf``                                        ``foxglove.FrameTransforms``  ``fr3_link0`` -> every drawn link (FK)
``/robot_description``                         JSON ``{"data": URDF}``    urdf/fr3.urdf (std_msgs/String layout)
=============================================  =========================  =============================================

The URDF is also served as the parameter ``/robot_description``; its meshes keep their
``package://franka_description/...`` URIs and are fetched through the server (the asset handler reads them from
franka_description or franky-sim, :func:`gpc_ros.monitor.description.mesh_path`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpc_ros.monitor.scene import Box, LineStrip, Primitive, Text

logger = logging.getLogger(__name__)

SCENE_TOPIC = "/gpc/scene"
POINTS_TOPIC = "/gpc/points"
JOINT_STATES_TOPIC = "/joint_states"
TF_TOPIC = "/tf"
ROBOT_DESCRIPTION = "/robot_description"
SUBPROTOCOL = "foxglove.sdk.v1"
STRING_SCHEMA = {"type": "object", "title": "std_msgs/String", "properties": {"data": {"type": "string"}}}


class ViewerError(RuntimeError):
    """The live view cannot start; the message says why in one sentence."""


@dataclass(frozen=True)
class ViewerConfig:
    """Where the Foxglove server listens and what it is called."""

    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 (default) serves this machine only, 0.0.0.0 every interface (no TLS, no
    authentication: only on a trusted network, docs/security.md)."""
    port: int = 8765
    """TCP port (Foxglove's default 8765); 0 = any free port."""
    name: str = "gpc_ros"
    """Server name shown in the Foxglove app."""

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"ViewerConfig.host must be an interface address such as 127.0.0.1, got {self.host!r}")
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise ValueError(f"ViewerConfig.port must be an int in [0, 65535], got {self.port!r}")


def _timestamp(t_s: float):
    from foxglove.messages import Timestamp

    sec = int(math.floor(t_s))
    return Timestamp(sec=sec, nsec=min(999_999_999, int(round((t_s - sec) * 1e9))))


def _color(rgba):
    from foxglove.messages import Color

    return Color(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def _points(array):
    from foxglove.messages import Point3

    return [Point3(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in array]


def _pose(position=(0.0, 0.0, 0.0), quaternion_xyzw=(0.0, 0.0, 0.0, 1.0)):
    from foxglove.messages import Pose, Quaternion, Vector3

    return Pose(position=Vector3(x=float(position[0]), y=float(position[1]), z=float(position[2])),
                orientation=Quaternion(x=float(quaternion_xyzw[0]), y=float(quaternion_xyzw[1]),
                                       z=float(quaternion_xyzw[2]), w=float(quaternion_xyzw[3])))


def scene_update(primitives: Sequence[Primitive], t_s: float, frame_id: str):
    """``foxglove.SceneUpdate``: one entity per primitive, ``id`` = the primitive's namespace."""
    from foxglove.messages import LinePrimitive, LinePrimitiveLineType, SceneEntity, SceneUpdate, TextPrimitive

    entities = []
    for prim in primitives:
        lines, texts = [], []
        if isinstance(prim, LineStrip):
            lines.append(LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=_pose(), thickness=prim.width_m,
                                       scale_invariant=False, points=_points(prim.points_m), color=_color(prim.color)))
        elif isinstance(prim, Box):
            lines.append(LinePrimitive(type=LinePrimitiveLineType.LineList, pose=_pose(), thickness=prim.width_m,
                                       scale_invariant=False, points=_points(prim.edges_m()), color=_color(prim.color)))
        elif isinstance(prim, Text):
            texts.append(TextPrimitive(pose=_pose(prim.position_m), billboard=True, font_size=prim.height_m,
                                       scale_invariant=False, color=_color(prim.color), text=prim.text))
        else:
            raise TypeError(f"cannot draw a {type(prim).__name__} in the Foxglove scene")
        entities.append(SceneEntity(timestamp=_timestamp(t_s), frame_id=frame_id, id=prim.ns, frame_locked=True,
                                    lines=lines, texts=texts))
    return SceneUpdate(entities=entities)


class LiveView:
    """A running Foxglove WebSocket server and its channels (a context manager; :meth:`close` stops it)."""

    def __init__(self, config: ViewerConfig | None = None, robot_description: str | None = None,
                 image_topics: Sequence[str] = ()) -> None:
        import foxglove
        from foxglove import Capability, Parameter
        from foxglove.channels import FrameTransformsChannel, JointStatesChannel, PointCloudChannel, SceneUpdateChannel

        self.config = config or ViewerConfig()
        self.context = foxglove.Context()  # own channels: several views (and tests) never share them
        self.robot_description = robot_description
        description = robot_description

        class Listener:
            def on_get_parameters(self, client, param_names, request_id=None):
                if description is None or (param_names and ROBOT_DESCRIPTION not in param_names
                                           and "robot_description" not in param_names):
                    return []
                return [Parameter(ROBOT_DESCRIPTION, value=description)]

            def on_subscribe(self, client, channel):  # a late client gets the URDF at once
                if channel.topic == ROBOT_DESCRIPTION and view.robot_description is not None:
                    view.log_robot_description()

            def on_unsubscribe(self, client, channel):  # called per channel when a client leaves: nothing to do
                pass  # (without it the SDK logs "Callback failed: AttributeError" once per channel)

        view = self
        # every channel known now exists before the server starts, so a client never sees one half-registered
        # (see add_image_channel)
        self._scene = SceneUpdateChannel(SCENE_TOPIC, context=self.context)
        self._points = PointCloudChannel(POINTS_TOPIC, context=self.context)
        self._joints = JointStatesChannel(JOINT_STATES_TOPIC, context=self.context)
        self._tf = FrameTransformsChannel(TF_TOPIC, context=self.context)
        self._description = foxglove.Channel(ROBOT_DESCRIPTION, schema=STRING_SCHEMA, context=self.context)
        self._images: dict[str, object] = {}
        for topic in image_topics:  # before the server starts: see add_image_channel
            self.add_image_channel(topic)
        try:
            self.server = foxglove.start_server(
                name=self.config.name, host=self.config.host, port=self.config.port, context=self.context,
                capabilities=[Capability.Parameters], server_listener=Listener(), asset_handler=self._asset)
        except RuntimeError as exc:
            if "in use" in str(exc) or "Address already" in str(exc):
                raise ViewerError(f"port {self.config.port} on {self.config.host} is already in use (another viewer "
                                  f"or foxglove_bridge?); choose another one with --port") from None
            raise ViewerError(f"the Foxglove server cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc}") from None
        self.port = int(self.server.port)
        logger.info("Foxglove live view on ws://%s:%d (subprotocol %s)", self.config.host, self.port, SUBPROTOCOL)

    @property
    def url(self) -> str:
        """``ws://host:port`` of the running server."""
        return f"ws://{self.config.host}:{self.port}"

    # ------------------------------------------------------------------ assets (meshes of the URDF)
    @staticmethod
    def _asset(uri: str) -> bytes | None:
        from gpc_ros.monitor.description import mesh_path

        path = mesh_path(uri)
        return path.read_bytes() if path is not None else None

    # ------------------------------------------------------------------ logging
    def log_scene(self, primitives: Sequence[Primitive], t_s: float, frame_id: str = "fr3_link0") -> None:
        """The scene's primitives as one ``foxglove.SceneUpdate`` at ``t_s`` (s)."""
        self._scene.log(scene_update(primitives, t_s, frame_id), log_time=int(t_s * 1e9))

    def log_points(self, points_m: np.ndarray, t_s: float, frame_id: str, colors_rgb: np.ndarray | None = None):
        """``(N, 3)`` points (m) and optional ``(N, 3)`` uint8 colours as a ``foxglove.PointCloud``."""
        from foxglove.messages import PackedElementField, PackedElementFieldNumericType, PointCloud

        f32, u8 = PackedElementFieldNumericType.Float32, PackedElementFieldNumericType.Uint8
        pts = np.ascontiguousarray(np.asarray(points_m, np.float32).reshape(-1, 3))
        fields = [PackedElementField(name=n, offset=4 * i, type=f32) for i, n in enumerate("xyz")]
        if colors_rgb is None:
            data, stride = pts.tobytes(), 12
        else:
            rec = np.zeros(len(pts), dtype=[("xyz", np.float32, 3), ("rgba", np.uint8, 4)])
            rec["xyz"] = pts
            rec["rgba"][:, :3] = np.asarray(colors_rgb, np.uint8).reshape(-1, 3)
            rec["rgba"][:, 3] = 255
            fields += [PackedElementField(name=n, offset=12 + i, type=u8)
                       for i, n in enumerate(("red", "green", "blue", "alpha"))]
            data, stride = rec.tobytes(), 16
        msg = PointCloud(timestamp=_timestamp(t_s), frame_id=frame_id, pose=_pose(), point_stride=stride,
                         fields=fields, data=data)
        self._points.log(msg, log_time=int(t_s * 1e9))

    def add_image_channel(self, topic: str) -> None:
        """Advertise ``topic`` as a ``foxglove.RawImage`` channel now (if it is not yet).

        Do it before clients connect where the topics are known: foxglove-sdk 0.30.3 can advertise a channel created
        while a client is connected before it accepts that client's subscription to it. Measured with the viewer test:
        4 of 15 runs got ``Unknown channel ID`` for a camera channel created on its first image, and that client then
        never receives the camera. A channel that exists when the client connects is not affected.
        """
        from foxglove.channels import RawImageChannel

        if topic not in self._images:
            self._images[topic] = RawImageChannel(topic, context=self.context)

    def log_image(self, topic: str, rgb: np.ndarray, t_s: float, frame_id: str) -> None:
        """An ``(H, W, 3)`` uint8 RGB image as a ``foxglove.RawImage`` (rgb8) on ``topic``."""
        from foxglove.messages import RawImage

        self.add_image_channel(topic)
        channel = self._images[topic]
        rgb = np.ascontiguousarray(rgb, np.uint8)
        msg = RawImage(timestamp=_timestamp(t_s), frame_id=frame_id, width=rgb.shape[1], height=rgb.shape[0],
                       encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes())
        channel.log(msg, log_time=int(t_s * 1e9))

    def log_joint_states(self, names: Sequence[str], positions: Sequence[float], t_s: float) -> None:
        """Joint positions (rad, m for fingers) as ``foxglove.JointStates``."""
        from foxglove.messages import JointState, JointStates

        joints = [JointState(name=n, position=float(p)) for n, p in zip(names, positions)]
        self._joints.log(JointStates(timestamp=_timestamp(t_s), joints=joints), log_time=int(t_s * 1e9))

    def log_transforms(self, poses: Mapping[str, tuple], t_s: float, parent: str = "fr3_link0") -> None:
        """``parent`` -> each link (pose = position m, quaternion x, y, z, w) as ``foxglove.FrameTransforms``."""
        from foxglove.messages import FrameTransform, FrameTransforms, Quaternion, Vector3

        transforms = [FrameTransform(timestamp=_timestamp(t_s), parent_frame_id=parent, child_frame_id=name,
                                     translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                                     rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
                      for name, (p, q) in poses.items() if name != parent]
        self._tf.log(FrameTransforms(transforms=transforms), log_time=int(t_s * 1e9))

    def log_robot_description(self) -> None:
        """Send the URDF on ``/robot_description`` (if the view has one)."""
        if self.robot_description is not None:
            self._description.log({"data": self.robot_description})

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the server (clients are disconnected)."""
        self.server.stop()

    def __enter__(self) -> "LiveView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def urdf_for_foxglove() -> str:
    """urdf/fr3.urdf with its ``package://franka_description`` mesh URIs (fetched through the server)."""
    from gpc_ros.monitor.description import robot_description

    return robot_description("franka_description")

