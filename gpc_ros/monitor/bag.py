"""rosbag2 bags with ``rosbags`` (pure Python, no ROS install).

The recording topic profile, a writer for raw CDR messages (what a raw rclpy subscription hands over), and a
validating reader.

Bags are rosbag2 version 9 with the ROS 2 Jazzy type definitions and RIHS01 type hashes (what Jazzy's
``ros2 bag info/play`` and Foxglove expect); storage ``mcap`` by default, ``sqlite3`` on request. Every problem with
a bag (missing file, not a bag, truncated or corrupt, a topic missing or of the wrong type, a message that does not
decode) raises :class:`BagError` whose one-sentence message names the file or the topic. Nothing is returned
until the whole bag was read, so callers never work on half a bag.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 9

# --- types used by gpc_ros (rosbags spells them pkg/msg/Name) ------------------------------------------------------
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
MULTI_DOF_TRAJECTORY = "trajectory_msgs/msg/MultiDOFJointTrajectory"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


class BagError(ValueError):
    """A bag cannot be used; the message names the file or the topic and what is wrong."""


def typestore():
    """The ROS 2 Jazzy typestore of rosbags (message definitions and RIHS01 hashes of Jazzy)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


# --- the recording profile -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """A topic (or a pattern: ``*`` matches one name segment) that a profile records, with its type."""

    pattern: str
    msgtype: str
    what: str

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` matches the pattern segment by segment."""
        want, have = self.pattern.strip("/").split("/"), topic.strip("/").split("/")
        return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have))


#: The default profile: everything replay needs plus health, at modest size (no depth images).
DEFAULT_PROFILE: tuple[TopicSpec, ...] = (
    TopicSpec("/gpc/action_chunk", MULTI_DOF_TRAJECTORY, "composed chunks (the actions the driver was sent)"),
    TopicSpec("/gpc/parents/*/chunk", MULTI_DOF_TRAJECTORY, "each parent's own chunk from the same noise"),
    TopicSpec("/joint_states", JOINT_STATE, "measured joints fr3_joint1..7 (+ fingers)"),
    TopicSpec("/ee_pose", POSE_STAMPED, "measured TCP pose fr3_hand_tcp in fr3_link0 (executed path, state)"),
    TopicSpec("/gpc/points", POINTCLOUD2, "the point cloud the point-cloud parents see"),
    TopicSpec("/camera/*/color/image_raw", IMAGE, "colour images the RGB parents see"),
    TopicSpec("/camera/*/color/camera_info", CAMERA_INFO, "colour camera intrinsics"),
    TopicSpec("/diagnostics", DIAGNOSTIC_ARRAY, "health of every node"),
)
#: ``full`` adds aligned depth, the markers and the transforms (large: ~0.6 MB per depth frame).
FULL_PROFILE: tuple[TopicSpec, ...] = DEFAULT_PROFILE + (
    TopicSpec("/camera/*/aligned_depth_to_color/image_raw", IMAGE, "aligned depth (16UC1 mm or 32FC1 m)"),
    TopicSpec("/camera/*/aligned_depth_to_color/camera_info", CAMERA_INFO, "depth intrinsics (= colour)"),
    TopicSpec("/gpc/markers", MARKER_ARRAY, "the monitor's markers"),
    TopicSpec("/tf", TF_MESSAGE, "transforms"),
    TopicSpec("/tf_static", TF_MESSAGE, "static transforms"),
)
PROFILES: dict[str, tuple[TopicSpec, ...]] = {"default": DEFAULT_PROFILE, "full": FULL_PROFILE}


def profile_spec(topic: str, profile: Sequence[TopicSpec]) -> TopicSpec | None:
    """The first spec of ``profile`` that ``topic`` matches (or None)."""
    return next((spec for spec in profile if spec.matches(topic)), None)


# --- writing -------------------------------------------------------------------------------------------------------


def ros_type_to_bag_type(ros_type: str) -> str:
    """``sensor_msgs/msg/Image`` from rclpy's ``sensor_msgs/msg/Image`` or ``sensor_msgs/Image``."""
    parts = ros_type.split("/")
    return f"{parts[0]}/msg/{parts[-1]}" if len(parts) == 2 else ros_type


class BagWriter:
    """A new rosbag2 bag (``storage`` mcap or sqlite3) written from raw CDR bytes; a context manager.

    The bag is written inside ``.<name>.partial/`` next to ``path`` and moved to ``path`` by :meth:`close`, so a bag
    at ``path`` is always complete (a crash leaves only the ``.partial`` directory).
    """

    def __init__(self, path: str | Path, storage: Literal["mcap", "sqlite3"] = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"bag storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already; choose a new output path")
        self._partial = self.path.parent / f".{self.path.name}.partial"
        if self._partial.exists():
            raise BagError(f"{self._partial} exists (left by an interrupted recording); remove it or choose a new "
                           f"output path")
        self._partial.mkdir(parents=True)
        self.typestore = typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._partial / self.path.name, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.set_custom_data("recorded_by", "gpc_ros")
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` of ``msgtype`` (``pkg/msg/Name``); its Jazzy definition and hash go into the bag."""
        msgtype = ros_type_to_bag_type(msgtype)
        if topic in self._connections:
            return
        if msgtype not in self.typestore.fielddefs:
            raise BagError(f"topic {topic}: type {msgtype} is not a ROS 2 Jazzy standard type known to rosbags")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, raw: bytes) -> None:
        """One serialised (CDR) message received at ``timestamp_ns`` (ns since the epoch, the recorder's clock)."""
        self._writer.write(self._connections[topic], int(timestamp_ns), bytes(raw))
        self.counts[topic] += 1

    def write_message(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """A rosbags message object (serialised with the Jazzy typestore)."""
        conn = self._connections[topic]
        self.write(topic, timestamp_ns, self.typestore.serialize_cdr(msg, conn.msgtype))

    def close(self) -> Path:
        """Finish the bag (metadata.yaml) and move it to ``path``."""
        if not self.closed:
            self._writer.close()
            (self._partial / self.path.name).rename(self.path)
            self._partial.rmdir()
            self.closed = True
            logger.info("wrote bag %s (%d messages on %d topics)", self.path, sum(self.counts.values()),
                        len(self.counts))
        return self.path

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading -------------------------------------------------------------------------------------------------------


@dataclass
class BagContents:
    """Decoded messages of the requested topics, in recording order."""

    path: Path
    types: dict[str, str]
    """Every topic of the bag -> its type."""
    messages: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    """Requested topic -> ``[(log time ns, message)]`` (rosbags message objects, same field names as rclpy's)."""

    def topics_matching(self, pattern: str) -> list[str]:
        """Topics of the bag matching ``pattern`` (``*`` = one segment), sorted."""
        spec = TopicSpec(pattern, "", "")
        return sorted(t for t in self.types if spec.matches(t))


def _bag_failure(path: Path, exc: BaseException) -> BagError:
    detail = " ".join(str(a) for a in getattr(exc, "args", ()) if a) or type(exc).__name__
    detail = detail.splitlines()[0] if detail.strip() else type(exc).__name__
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return BagError(f"bag {path} cannot be read: it is truncated, corrupt or not a rosbag2 bag ({detail})")


#: What a damaged bag can make rosbags (and the libraries under it) raise.
def _read_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    return (AnyReaderError, ReaderError, SerdeError, TypesysError, sqlite3.Error, struct.error, EOFError,
            KeyError, IndexError, ValueError, OSError, AssertionError, UnicodeDecodeError)


def bag_types(path: str | Path) -> dict[str, str]:
    """Topic -> type of every topic in a bag (reads the index only)."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        with AnyReader([path], default_typestore=typestore()) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except _read_errors() as exc:
        raise _bag_failure(path, exc) from None


def read_bag(path: str | Path, required: Mapping[str, str | Iterable[str]],
             optional: Mapping[str, str | Iterable[str]] | None = None) -> BagContents:
    """Read and decode every message of the ``required`` and ``optional`` topics (topic -> allowed type(s)).

    Raises :class:`BagError` naming the file (missing, unreadable, truncated, corrupt) or the topic (missing from
    the bag, of another type, holding no message, a message that does not decode).
    """
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    optional = dict(optional or {})
    wanted = {**optional, **required}
    allowed = {t: {v} if isinstance(v, str) else set(v) for t, v in wanted.items()}
    errors = _read_errors()
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except errors as exc:
        raise _bag_failure(path, exc) from None
    try:
        types = {c.topic: c.msgtype for c in reader.connections}
        for topic in required:
            if topic not in types:
                raise BagError(f"bag {path} has no topic {topic} (needed; the bag has {sorted(types)})")
        for topic, kinds in allowed.items():
            if topic in types and types[topic] not in kinds:
                raise BagError(f"topic {topic} in bag {path} is {types[topic]}, expected "
                               f"{' or '.join(sorted(kinds))}")
        present = [c for c in reader.connections if c.topic in allowed]
        out = BagContents(path, types, {c.topic: [] for c in present})
        count = 0
        try:
            for conn, timestamp, raw in reader.messages(connections=present):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except errors as exc:
                    raise BagError(f"message {len(out.messages[conn.topic])} on topic {conn.topic} in bag {path} "
                                   f"does not decode as {conn.msgtype} ({exc})") from None
                out.messages[conn.topic].append((int(timestamp), msg))
                count += 1
        except BagError:
            raise
        except errors as exc:
            raise _bag_failure(path, exc) from None
        for topic in required:
            if not out.messages.get(topic):
                raise BagError(f"topic {topic} in bag {path} holds no message")
        expected = sum(c.msgcount for c in present)
        if expected and count < expected:
            raise BagError(f"bag {path} is truncated: its index lists {expected} messages on the requested topics, "
                           f"{count} could be read")
        logger.info("read %d messages on %d topics from %s", count, len(present), path)
        return out
    finally:
        try:
            reader.close()
        except errors:
            pass
