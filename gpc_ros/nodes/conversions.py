"""The one place where numpy arrays and core values become ROS messages and back.

Nodes call these; the core never sees a message. Sections are grouped by the messages they convert.
Conventions (frames, units, layouts) are documented in docs/messages.md.
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (used by every section)

# --- time ------------------------------------------------------------------------------------------------------


def seconds_to_stamp(t_s: float):
    """``builtin_interfaces/Time`` from seconds (float, ROS clock)."""
    from builtin_interfaces.msg import Time

    sec = int(np.floor(t_s))
    nanosec = int(round((t_s - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def stamp_to_seconds(stamp) -> float:
    """Seconds (float) of a ``builtin_interfaces/Time``."""
    return stamp.sec + stamp.nanosec * 1e-9

# --- health (/diagnostics) ----------------------------------------------------------------------------------------

DIAGNOSTIC_LEVELS = ("OK", "WARN", "ERROR", "STALE")


def diagnostic_array(name: str, level: str, message: str, hardware_id: str, values: dict[str, object], stamp):
    """One ``DiagnosticStatus`` (level ``OK | WARN | ERROR | STALE``) wrapped in a stamped ``DiagnosticArray``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    if level not in DIAGNOSTIC_LEVELS:
        raise ValueError(f"diagnostic level must be one of {DIAGNOSTIC_LEVELS}, got {level!r}")
    status = DiagnosticStatus(level=getattr(DiagnosticStatus, level), name=name, message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg


# --- images and camera info (perception) --------------------------------------------------------------------------

#: Depth image encodings the perception nodes publish and accept (see docs/messages.md, "Perception").
DEPTH_ENCODINGS = ("16UC1", "32FC1")


def rgb_to_image_msg(rgb: np.ndarray, stamp, frame_id: str):
    """``sensor_msgs/Image`` rgb8 from (H, W, 3) uint8 RGB; ``stamp`` is a builtin_interfaces/Time."""
    from sensor_msgs.msg import Image

    rgb = np.ascontiguousarray(rgb, np.uint8)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = rgb.tobytes()
    return msg


def depth_to_image_msg(depth_m: np.ndarray, stamp, frame_id: str, encoding: str = "16UC1"):
    """``sensor_msgs/Image`` depth from (H, W) depth (m; 0 or NaN = no data).

    16UC1: millimetres (rounded, > 65.535 m clipped), 0 = no data (the realsense2_camera convention);
    32FC1: metres, NaN = no data (REP 118).
    """
    from sensor_msgs.msg import Image

    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")
    depth_m = np.asarray(depth_m, np.float32)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if encoding == "16UC1":
        pixels = np.where(valid, np.clip(np.rint(depth_m * 1000.0), 0, 65535), 0).astype(np.uint16)
    else:
        pixels = np.where(valid, depth_m, np.float32(np.nan)).astype(np.float32)
    msg = Image(height=depth_m.shape[0], width=depth_m.shape[1], encoding=encoding, is_bigendian=0,
                step=depth_m.shape[1] * pixels.itemsize)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = pixels.tobytes()
    return msg


def _image_pixels(msg, dtype, channels: int) -> np.ndarray:
    row = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)  # data: array.array('B') or bytes
    itemsize = np.dtype(dtype).itemsize
    pixels = row[:, : msg.width * channels * itemsize].copy().view(dtype)
    if msg.is_bigendian:
        pixels = pixels.byteswap()
    return pixels.reshape(msg.height, msg.width, channels) if channels > 1 else pixels


def image_msg_to_depth_m(msg) -> np.ndarray:
    """(H, W) float32 depth (m, 0 = no data) from a 16UC1 (mm) or 32FC1 (m) ``sensor_msgs/Image``."""
    if msg.encoding == "16UC1":
        return _image_pixels(msg, np.uint16, 1).astype(np.float32) * np.float32(0.001)
    if msg.encoding == "32FC1":
        depth = _image_pixels(msg, np.float32, 1)
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)
    raise ValueError(f"depth image encoding must be one of {DEPTH_ENCODINGS}, got {msg.encoding!r}")


def image_msg_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 or bgr8 ``sensor_msgs/Image``."""
    if msg.encoding == "rgb8":
        return _image_pixels(msg, np.uint8, 3)
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(_image_pixels(msg, np.uint8, 3)[..., ::-1])
    raise ValueError(f"colour image encoding must be rgb8 or bgr8, got {msg.encoding!r}")


def camera_info_msg(intrinsics, stamp, frame_id: str):
    """``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion) of a ``CameraIntrinsics``."""
    from sensor_msgs.msg import CameraInfo

    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    msg = CameraInfo(height=intrinsics.height, width=intrinsics.width, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def camera_info_to_intrinsics(msg):
    """``CameraIntrinsics`` from a ``sensor_msgs/CameraInfo`` (K; distortion ignored)."""
    from gpc_ros.perception.frames import CameraIntrinsics

    k = msg.k
    return CameraIntrinsics(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]), float(k[5]))

# --- point clouds (perception) ------------------------------------------------------------------------------------


def pointcloud2_msg(points_m: np.ndarray, stamp, frame_id: str, colors_rgb: np.ndarray | None = None):
    """``sensor_msgs/PointCloud2`` (height 1, dense) from (N, 3) points (m) and optional (N, 3) uint8 colours.

    Layout: x, y, z float32 at offsets 0, 4, 8; with colours an ``rgb`` float32 at 12 holding 0x00RRGGBB (the PCL
    packed-rgb convention rviz understands); point_step 12 or 16, little endian.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    points = np.asarray(points_m, np.float32).reshape(-1, 3)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    if colors_rgb is None:
        data = np.ascontiguousarray(points)
    else:
        colors = np.asarray(colors_rgb, np.uint32).reshape(-1, 3)
        packed = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
        fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
        data = np.empty((len(points), 4), np.float32)
        data[:, :3] = points
        data[:, 3] = packed.astype(np.uint32).view(np.float32)
    msg = PointCloud2(height=1, width=len(points), fields=fields, is_bigendian=False,
                      point_step=data.shape[1] * 4, row_step=data.shape[1] * 4 * len(points), is_dense=True)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = data.tobytes()
    return msg


def pointcloud2_to_numpy(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 3) float32 points and (N, 3) uint8 colours (or None) from a ``sensor_msgs/PointCloud2``.

    Reads each field with its own ``datatype`` and the message's ``is_bigendian``: x, y, z as float32 or float64
    (converted to float32), an optional ``rgb`` as float32 or uint32 holding 0x00RRGGBB; rows padded beyond
    ``width * point_step`` (``row_step``) are handled. Any other layout raises ``ValueError`` naming the field.
    """
    from sensor_msgs.msg import PointField

    by_name = {f.name: f for f in msg.fields}
    if not {"x", "y", "z"} <= by_name.keys():
        raise ValueError(f"PointCloud2 needs x, y, z fields, got {sorted(by_name)}")
    order = ">" if msg.is_bigendian else "<"
    allowed = {"x": {PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"},
               "rgb": {PointField.FLOAT32: "u4", PointField.UINT32: "u4"}}
    allowed["y"] = allowed["z"] = allowed["x"]
    names, formats, offsets = [], [], []
    for name in ("x", "y", "z", "rgb"):
        field = by_name.get(name)
        if field is None:
            continue
        code = allowed[name].get(field.datatype)
        if code is None or field.count not in (0, 1):
            raise ValueError(
                f"PointCloud2 field {name!r} has datatype {field.datatype} and count {field.count}; supported are "
                f"count 1 with datatype {' or '.join(str(d) for d in allowed[name])} (PointField constants)")
        names.append(name)
        formats.append(order + code)
        offsets.append(field.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    n_points, rows = msg.width * msg.height, msg.height
    raw = np.frombuffer(msg.data, np.uint8)
    if raw.size < rows * msg.row_step or msg.row_step < msg.width * msg.point_step:
        raise ValueError(f"PointCloud2 data has {raw.size} bytes; height {msg.height} x row_step {msg.row_step} "
                         f"(>= width {msg.width} x point_step {msg.point_step}) needed")
    packed = raw[:rows * msg.row_step].reshape(rows, msg.row_step)[:, :msg.width * msg.point_step]
    table = np.ascontiguousarray(packed).view(dtype).reshape(n_points)
    points = np.stack([table[a].astype(np.float32) for a in "xyz"], axis=1)
    colors = None
    if "rgb" in names:
        rgb = table["rgb"].astype(np.uint32)
        colors = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1).astype(np.uint8)
    return points, colors

# --- robot state, poses and action chunks (driver) ----------------------------------------------------------------

#: Frames and names of the driver's messages (see docs/messages.md, "Driver").
BASE_FRAME = "fr3_link0"
TCP_FRAME = "fr3_hand_tcp"
GRIPPER_WIDTH_NAME = "fr3_gripper_width"
ARM_JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("fr3_finger_joint1", "fr3_finger_joint2")
#: Consecutive points of a chunk message must be this evenly spaced (s).
CHUNK_SPACING_TOLERANCE_S = 1e-3


def _chunk_timing(points, stamp) -> tuple[float, float]:
    """(start_time_s, dt_s) from header.stamp + time_from_start of evenly spaced points."""
    from gpc_ros.control.chunk import ChunkRejectedError

    if len(points) == 0:
        raise ChunkRejectedError("an action chunk message needs at least one point")
    offsets = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in points])
    if len(points) == 1:
        dt = 0.1  # a single target: the spacing is irrelevant, any valid dt works
    else:
        steps = np.diff(offsets)
        dt = float(steps.mean())
        if np.abs(steps - dt).max() > CHUNK_SPACING_TOLERANCE_S:
            raise ChunkRejectedError(f"points[i].time_from_start must be evenly spaced (within "
                                     f"{CHUNK_SPACING_TOLERANCE_S} s), got steps {np.round(steps, 4).tolist()}")
    return stamp_to_seconds(stamp) + float(offsets[0]), dt


def chunk_from_multi_dof_trajectory(msg):
    """:class:`~gpc_ros.control.chunk.ActionChunk` (Cartesian) from a ``trajectory_msgs/MultiDOFJointTrajectory``.

    header.stamp = time of points[0] minus its time_from_start, header.frame_id = fr3_link0,
    joint_names[0] = fr3_hand_tcp (transforms[0] = TCP pose), optional joint_names[1] = fr3_gripper_width
    (transforms[1].translation.x = width in m). Raises ChunkRejectedError with the reason otherwise.
    """
    from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError

    if msg.header.frame_id not in ("", BASE_FRAME):
        raise ChunkRejectedError(f"header.frame_id must be {BASE_FRAME!r}, got {msg.header.frame_id!r}")
    names = list(msg.joint_names)
    if names not in ([TCP_FRAME], [TCP_FRAME, GRIPPER_WIDTH_NAME]):
        raise ChunkRejectedError(f"joint_names must be [{TCP_FRAME!r}] or [{TCP_FRAME!r}, {GRIPPER_WIDTH_NAME!r}], "
                                 f"got {names}")
    start_s, dt_s = _chunk_timing(msg.points, msg.header.stamp)
    n_tf = len(names)
    if any(len(p.transforms) != n_tf for p in msg.points):
        raise ChunkRejectedError(f"every point needs {n_tf} transforms (one per joint_names entry)")
    pos = np.array([[p.transforms[0].translation.x, p.transforms[0].translation.y, p.transforms[0].translation.z]
                    for p in msg.points])
    quat = np.array([[p.transforms[0].rotation.x, p.transforms[0].rotation.y, p.transforms[0].rotation.z,
                      p.transforms[0].rotation.w] for p in msg.points])
    width = np.array([p.transforms[1].translation.x for p in msg.points]) if n_tf == 2 else None
    return ActionChunk.from_arrays(start_s, dt_s, positions_m=pos, quaternions_xyzw=quat, gripper_width_m=width)


def multi_dof_trajectory_from_chunk(chunk):
    """The ``trajectory_msgs/MultiDOFJointTrajectory`` for a Cartesian chunk (what the composer publishes)."""
    from builtin_interfaces.msg import Duration
    from geometry_msgs.msg import Quaternion, Transform, Vector3
    from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

    msg = MultiDOFJointTrajectory()
    msg.header.stamp = seconds_to_stamp(chunk.start_time_s)
    msg.header.frame_id = BASE_FRAME
    msg.joint_names = [TCP_FRAME] + ([GRIPPER_WIDTH_NAME] if chunk.gripper_width_m is not None else [])
    for i in range(chunk.n_steps):
        p, q = chunk.positions_m[i], chunk.quaternions_xyzw[i]
        tfs = [Transform(translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                         rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))]
        if chunk.gripper_width_m is not None:
            tfs.append(Transform(translation=Vector3(x=float(chunk.gripper_width_m[i]))))
        offset_ns = int(round(i * chunk.dt_s * 1e9))
        msg.points.append(MultiDOFJointTrajectoryPoint(
            transforms=tfs, time_from_start=Duration(sec=offset_ns // 1_000_000_000,
                                                     nanosec=offset_ns % 1_000_000_000)))
    return msg


#: Where the driver publishes its running plan (docs/messages.md).
DRIVER_PLAN_TOPIC = "/gpc/driver_plan"


def driver_plan_qos():
    """QoS of ``/gpc/driver_plan``: reliable, transient local, depth 1 (a late subscriber gets the current plan)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def driver_plan_msg(plan, now_s: float):
    """The driver's running plan as ``MultiDOFJointTrajectory`` (``/gpc/driver_plan``, docs/messages.md).

    A Cartesian plan is published like an action chunk; no plan (idle, stopped, dropped) or a joint plan gives a
    message with no points, stamped ``now_s``.
    """
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    if plan is not None and plan.is_cartesian:
        return multi_dof_trajectory_from_chunk(plan)
    msg = MultiDOFJointTrajectory()
    msg.header.stamp = seconds_to_stamp(now_s)
    msg.header.frame_id = BASE_FRAME
    msg.joint_names = [TCP_FRAME]
    return msg


def running_plan_from_msg(msg):
    """The driver's running plan from a ``/gpc/driver_plan`` message; None when it has no points.

    A :class:`~gpc_ros.compose.warm_start.RunningPlan` of the TCP position, then the gripper width if present.
    Raises ChunkRejectedError for a malformed message (the action chunk's rules).
    """
    from gpc_ros.compose.warm_start import RunningPlan

    if len(msg.points) == 0:
        return None
    chunk = chunk_from_multi_dof_trajectory(msg)
    actions = chunk.positions_m if chunk.gripper_width_m is None else np.column_stack(
        [chunk.positions_m, chunk.gripper_width_m])
    return RunningPlan(chunk.start_time_s, chunk.dt_s, np.array(actions, dtype=np.float64))


def chunk_from_joint_trajectory(msg):
    """Joint :class:`~gpc_ros.control.chunk.ActionChunk` from ``trajectory_msgs/JointTrajectory``.

    joint_names fr3_joint1..7 in any order, optionally fr3_gripper_width (m); positions in rad.
    """
    from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError

    names = list(msg.joint_names)
    if sorted(set(names) - {GRIPPER_WIDTH_NAME}) != sorted(ARM_JOINT_NAMES) or len(set(names)) != len(names):
        raise ChunkRejectedError(f"joint_names must be {list(ARM_JOINT_NAMES)} (any order, each once) plus optionally "
                                 f"{GRIPPER_WIDTH_NAME!r}, got {names}")
    start_s, dt_s = _chunk_timing(msg.points, msg.header.stamp)
    if any(len(p.positions) != len(names) for p in msg.points):
        raise ChunkRejectedError(f"every point needs {len(names)} positions (one per joint name)")
    table = np.array([list(p.positions) for p in msg.points], dtype=np.float64)
    order = [names.index(n) for n in ARM_JOINT_NAMES]
    width = table[:, names.index(GRIPPER_WIDTH_NAME)] if GRIPPER_WIDTH_NAME in names else None
    return ActionChunk.from_arrays(start_s, dt_s, joint_positions_rad=table[:, order], gripper_width_m=width)


def joint_state_from_snapshot(snapshot, stamp):
    """``sensor_msgs/JointState`` of a robot snapshot, named like franka_ros2.

    fr3_joint1..7 (rad, rad/s) and, with a gripper, fr3_finger_joint1/2 at half the opening width each (m).
    """
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = stamp
    names = list(ARM_JOINT_NAMES)
    pos = [float(v) for v in snapshot.joint_positions_rad]
    vel = [float(v) for v in snapshot.joint_velocities_rad_s]
    if snapshot.gripper_width_m is not None:
        names += list(FINGER_JOINT_NAMES)
        pos += [snapshot.gripper_width_m / 2.0] * 2
        vel += [0.0, 0.0]
    msg.name, msg.position, msg.velocity = names, pos, vel
    return msg


def pose_stamped_from_snapshot(snapshot, stamp):
    """``geometry_msgs/PoseStamped`` of fr3_hand_tcp in fr3_link0 (m, unit quaternion)."""
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, BASE_FRAME
    p, q = snapshot.ee_position_m, snapshot.ee_quaternion_xyzw
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in p)
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = (
        float(v) for v in q)
    return msg


# --- policy host <-> composer exchange (docs/protocol.md) ------------------------------------------------------------

EXCHANGE_LABELS = ("rows", "horizon", "action_dim")


def exchange_to_msg(exchange):
    """``std_msgs/Float64MultiArray`` of one :class:`gpc_ros.graph.protocol.Exchange`.

    The header is in the first ``layout.data_offset`` values, the ``(rows, horizon, action_dim)`` tensor after it
    (row-major).
    """
    import array

    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    from gpc_ros.graph.protocol import HEADER_SLOTS

    shape = tuple(exchange.tensor.shape) if exchange.tensor.ndim == 3 else (0, 0, 0)
    msg = Float64MultiArray()
    msg.layout.data_offset = HEADER_SLOTS
    strides = (shape[0] * shape[1] * shape[2], shape[1] * shape[2], shape[2])
    msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=stride)
                      for label, size, stride in zip(EXCHANGE_LABELS, shape, strides)]
    data = array.array("d")
    data.frombytes(exchange.pack().tobytes())
    msg.data = data
    return msg


def exchange_from_msg(msg):
    """Inverse of :func:`exchange_to_msg` (raises ValueError for a message that does not follow the protocol)."""
    from gpc_ros.graph.protocol import HEADER_SLOTS, Exchange

    if msg.layout.data_offset != HEADER_SLOTS or [d.label for d in msg.layout.dim] != list(EXCHANGE_LABELS):
        raise ValueError(f"not a gpc_ros exchange message: data_offset {msg.layout.data_offset} (want "
                         f"{HEADER_SLOTS}), dims {[d.label for d in msg.layout.dim]} (want {list(EXCHANGE_LABELS)})")
    return Exchange.unpack(np.frombuffer(msg.data, dtype=np.float64), tuple(d.size for d in msg.layout.dim))

# --- monitoring: markers (monitor) --------------------------------------------------------------------------------

#: Topic of the monitor node's markers (see docs/monitoring.md).
MARKER_TOPIC = "/gpc/markers"


def marker_array_from_primitives(primitives, stamp, frame_id: str = BASE_FRAME):
    """``visualization_msgs/MarkerArray`` of :mod:`gpc_ros.monitor.scene` primitives (all ``action`` ADD).

    LineStrip -> LINE_STRIP (scale.x = width), Box -> LINE_LIST of its 12 edges, Text -> TEXT_VIEW_FACING
    (scale.z = height); ``ns``/``id`` as the primitive's; identity pose; colours as given (RGBA in [0, 1]).
    """
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    from gpc_ros.monitor.scene import Box, LineStrip, Text

    markers = []
    for prim in primitives:
        m = Marker(ns=prim.ns, id=int(prim.id), action=Marker.ADD)
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.pose.orientation.w = 1.0
        m.color = ColorRGBA(r=float(prim.color[0]), g=float(prim.color[1]), b=float(prim.color[2]),
                            a=float(prim.color[3]))
        if isinstance(prim, LineStrip):
            m.type, m.scale.x = Marker.LINE_STRIP, float(prim.width_m)
            m.points = [Point(x=x, y=y, z=z) for x, y, z in np.asarray(prim.points_m, np.float64).tolist()]
        elif isinstance(prim, Box):
            m.type, m.scale.x = Marker.LINE_LIST, float(prim.width_m)
            m.points = [Point(x=x, y=y, z=z) for x, y, z in prim.edges_m().astype(np.float64).tolist()]
        elif isinstance(prim, Text):
            m.type, m.scale.z, m.text = Marker.TEXT_VIEW_FACING, float(prim.height_m), prim.text
            m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in prim.position_m)
        else:
            raise TypeError(f"cannot draw a {type(prim).__name__} as a marker (LineStrip, Box or Text)")
        markers.append(m)
    return MarkerArray(markers=markers)


def chunk_positions_m(msg) -> np.ndarray:
    """``(N, 3)`` TCP positions (m) of a ``MultiDOFJointTrajectory`` chunk (transforms[0] of every point)."""
    return np.array([[p.transforms[0].translation.x, p.transforms[0].translation.y, p.transforms[0].translation.z]
                     for p in msg.points if len(p.transforms) > 0], dtype=np.float64).reshape(-1, 3)


# --- monitoring: compressed images (recorder, replay) ---------------------------------------------------------------

#: Formats of ``sensor_msgs/CompressedImage`` the recorder writes and replay reads (image_transport's names).
COMPRESSED_FORMATS = ("jpeg", "png")


def compressed_image_msg(rgb: np.ndarray, stamp, frame_id: str, fmt: str = "jpeg", jpeg_quality: int = 90):
    """``sensor_msgs/CompressedImage`` of an (H, W, 3) uint8 RGB image.

    ``format`` is ``"rgb8; jpeg compressed bgr8"`` (or png), what image_transport's compressed plugin writes.
    """
    import cv2
    from sensor_msgs.msg import CompressedImage

    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed image format must be one of {COMPRESSED_FORMATS}, got {fmt!r}")
    bgr = np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {bgr.shape} image as {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = encoded.tobytes()
    return msg


def compressed_image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a jpeg or png ``sensor_msgs/CompressedImage``."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"compressed image (format {msg.format!r}) does not decode as jpeg or png")
    return np.ascontiguousarray(bgr[..., ::-1])
