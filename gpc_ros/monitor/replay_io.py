"""From a rosbag2 bag to a :class:`~gpc_ros.monitor.replay.Recording`.

Read with rosbags; messages decoded with the package's one conversion module, :mod:`gpc_ros.nodes.conversions`,
which imports no rclpy for these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpc_ros.monitor import bag as bagio
from gpc_ros.monitor.replay import Recording, Stream


@dataclass(frozen=True)
class ReplayTopics:
    """Which recorded topics feed the replay (names as in the topic profile, docs/monitoring.md)."""

    image_topic: str = ""
    """Colour images (``sensor_msgs/Image`` rgb8/bgr8 or ``sensor_msgs/CompressedImage``); empty = the bag's only
    ``/camera/*/color/image_raw`` (or its ``/compressed``)."""
    points_topic: str = "/gpc/points"
    state_topic: str = "/ee_pose"
    """``geometry_msgs/PoseStamped``: the state the parents observe and the executed path."""
    action_topic: str = "/gpc/action_chunk"
    """Recorded composed chunks (optional in the bag)."""


def _image_topic(path: Path, types: dict[str, str], topics: ReplayTopics) -> str:
    if topics.image_topic:
        return topics.image_topic
    found = [t for t in types if bagio.TopicSpec("/camera/*/color/image_raw", "", "").matches(t)
             or bagio.TopicSpec("/camera/*/color/image_raw/compressed", "", "").matches(t)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise bagio.BagError(f"bag {path} has no colour image topic /camera/<name>/color/image_raw[/compressed] "
                             f"(needed by an image parent; the bag has {sorted(types)})")
    raise bagio.BagError(f"bag {path} has several colour image topics {sorted(found)}; choose one with "
                         f"--image-topic")


def _stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _gripper_width(joint_states: list) -> tuple[np.ndarray, np.ndarray]:
    """(stamps s, gripper width m = the two finger joints' sum) of recorded ``joint_states``; empty if none."""
    from gpc_ros.nodes.conversions import FINGER_JOINT_NAMES

    times, widths = [], []
    for _, m in joint_states:
        fingers = [p for n, p in zip(m.name, m.position) if n in FINGER_JOINT_NAMES]
        if len(fingers) == 2:
            times.append(_stamp_s(m))
            widths.append(float(sum(fingers)))
    return np.asarray(times), np.asarray(widths)


def _cloud(msg) -> np.ndarray:
    """A ``PointCloud2`` -> ``(N, 3)`` xyz (m), or ``(N, 6)`` with ``rgb`` in [0, 1] when it has colour."""
    from gpc_ros.nodes import conversions as cv

    points, colors = cv.pointcloud2_to_numpy(msg)
    if colors is None:
        return np.asarray(points, np.float32)
    return np.concatenate([np.asarray(points, np.float32), np.asarray(colors, np.float32) / np.float32(255.0)], 1)


def _state(msg, width: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The robot state of an ``ee_pose`` in the action layout, as the policy host builds it.

    :mod:`gpc_ros.action_space`: position m, 6-D rotation, gripper width m from the latest ``joint_states`` at or
    before it (0 without any); parents observing the TCP position only take its first 3 numbers.
    """
    from gpc_ros.action_space import pose_to_action

    p, q = msg.pose.position, msg.pose.orientation
    times, widths = width
    k = int(np.searchsorted(times, _stamp_s(msg), side="right")) - 1
    return pose_to_action(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]),
                          float(widths[k]) if k >= 0 else (float(widths[0]) if len(widths) else 0.0))


def load_recording(path: str | Path, needs: set[str], topics: ReplayTopics | None = None) -> Recording:
    """Read the streams ``needs`` (``image``, ``points``, ``state``) plus the recorded chunks and executed path.

    Raises :class:`~gpc_ros.monitor.bag.BagError` (naming the file or topic) for any problem; nothing partial.
    """
    from gpc_ros.nodes import conversions as cv

    topics = topics or ReplayTopics()
    path = Path(path)
    types = bagio.bag_types(path)
    required: dict[str, object] = {}
    image_topic = None
    if "image" in needs:
        image_topic = _image_topic(path, types, topics)
        required[image_topic] = (bagio.COMPRESSED_IMAGE if image_topic.endswith("/compressed") else bagio.IMAGE)
    if "points" in needs:
        required[topics.points_topic] = bagio.POINTCLOUD2
    if "state" in needs:
        required[topics.state_topic] = bagio.POSE_STAMPED
    optional = {topics.action_topic: bagio.MULTI_DOF_TRAJECTORY, topics.state_topic: bagio.POSE_STAMPED,
                "/joint_states": bagio.JOINT_STATE}
    contents = bagio.read_bag(path, required, optional)

    def decode(topic: str, convert) -> Stream:
        times, frames = [], []
        for i, (_, msg) in enumerate(contents.messages[topic]):
            try:
                frames.append(convert(msg))
            except ValueError as exc:
                raise bagio.BagError(f"message {i} on topic {topic} in bag {path} is unusable: {exc}") from None
            times.append(_stamp_s(msg))
        return Stream(topic, np.asarray(times), frames)

    streams: dict[str, Stream] = {}
    if image_topic is not None:
        convert = cv.compressed_image_to_rgb if image_topic.endswith("/compressed") else cv.image_msg_to_rgb
        streams["image"] = decode(image_topic, convert)
    if "points" in needs:
        streams["points"] = decode(topics.points_topic, _cloud)
    if contents.messages.get(topics.state_topic):
        width = _gripper_width(contents.messages.get("/joint_states", []))
        streams["state"] = decode(topics.state_topic, lambda m: _state(m, width))
    chunks = []
    for i, (_, msg) in enumerate(contents.messages.get(topics.action_topic, [])):
        try:
            chunks.append(cv.chunk_from_multi_dof_trajectory(msg))
        except ValueError as exc:
            raise bagio.BagError(f"message {i} on topic {topics.action_topic} in bag {path} is not a valid "
                                 f"action chunk: {exc}") from None
    chunks.sort(key=lambda c: c.start_time_s)
    return Recording(streams, chunks, str(path))
