"""A small recorded session written as a real rosbag2 bag: rclpy messages (built by gpc_ros.nodes.conversions),
serialised by rclpy and stored with rosbags, as the recorder does. The arrays are kept so tests can compute the
expected report numbers from them directly, without the bag."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The small stored checkpoints of test/policies (diffusion_rgb, flow_pointcloud; H = 8, D = 3).
CHECKPOINTS = Path(__file__).parents[1] / "policies" / "data"
IMAGE_TOPIC = "/camera/camera/color/image_raw"
T0_S = 1_700_000_000.0


@dataclass
class Session:
    """What was recorded (times in s on the recorded clock)."""

    image_times_s: np.ndarray
    images: np.ndarray          # (n, H, W, 3) uint8
    cloud_times_s: np.ndarray
    clouds: np.ndarray          # (n, N, 3) float32
    state_times_s: np.ndarray
    states_m: np.ndarray        # (n, 3)
    chunk_times_s: np.ndarray
    chunks_m: np.ndarray        # (n, H, 3)
    chunk_dt_s: float


def make_session(seed: int = 0, duration_s: float = 3.0, horizon: int = 8) -> Session:
    """A TCP moving on a smooth curve, camera frames at 10 Hz, clouds at 10 Hz (phase-shifted), poses at 50 Hz,
    and composed chunks every 0.5 s following the curve ahead (dt 0.1 s); all streams at distinct stamps."""
    rng = np.random.default_rng(seed)

    def tcp(t):
        t = np.asarray(t, dtype=np.float64)
        return np.stack([0.45 + 0.1 * np.sin(0.8 * t), 0.1 * np.cos(0.6 * t), 0.25 - 0.03 * t], axis=-1)

    image_t = np.arange(0.0, duration_s, 0.1)
    images = rng.integers(0, 256, (len(image_t), 48, 64, 3), dtype=np.uint8)
    cloud_t = np.arange(0.05, duration_s, 0.1)
    clouds = rng.uniform(-0.2, 0.6, (len(cloud_t), 80, 3)).astype(np.float32)
    # no two streams share a stamp: at 1.7e9 s a float64 resolves only ~0.2 us, so "at or before" a shared stamp
    # could go either way after the round trip through builtin_interfaces/Time
    state_t = np.arange(0.007, duration_s, 0.02)
    states = tcp(state_t) + rng.normal(0, 1e-4, (len(state_t), 3))
    chunk_t = np.arange(0.33, duration_s - 0.1, 0.5)
    chunks = np.stack([tcp(t + 0.1 * np.arange(horizon)) for t in chunk_t])
    return Session(T0_S + image_t, images, T0_S + cloud_t, clouds, T0_S + state_t, states, T0_S + chunk_t, chunks,
                   0.1)


def write_session(session: Session, path: Path, storage: str = "mcap", compressed: bool = False,
                  skip: tuple[str, ...] = ()) -> Path:
    """Write ``session`` as a bag (log time = header stamp + 1 ms); ``skip`` leaves topics out."""
    from rclpy.serialization import serialize_message

    from gpc_ros.control.chunk import ActionChunk
    from gpc_ros.monitor.bag import BagWriter
    from gpc_ros.nodes import conversions as cv

    entries = []
    image_topic = IMAGE_TOPIC + ("/compressed" if compressed else "")
    for t, img in zip(session.image_times_s, session.images):
        stamp = cv.seconds_to_stamp(t)
        msg = (cv.compressed_image_msg(img, stamp, "camera_color_optical_frame", "png") if compressed
               else cv.rgb_to_image_msg(img, stamp, "camera_color_optical_frame"))
        entries.append((t, image_topic, msg))
    for t, pts in zip(session.cloud_times_s, session.clouds):
        entries.append((t, "/gpc/points", cv.pointcloud2_msg(pts, cv.seconds_to_stamp(t), "fr3_link0")))
    for t, p in zip(session.state_times_s, session.states_m):
        snap = type("S", (), {"ee_position_m": p, "ee_quaternion_xyzw": np.array([1.0, 0, 0, 0])})
        entries.append((t, "/ee_pose", cv.pose_stamped_from_snapshot(snap, cv.seconds_to_stamp(t))))
    for t, pos in zip(session.chunk_times_s, session.chunks_m):
        chunk = ActionChunk.from_arrays(float(t), session.chunk_dt_s, positions_m=pos,
                                        quaternions_xyzw=np.tile([1.0, 0, 0, 0], (len(pos), 1)))
        entries.append((t, "/gpc/action_chunk", cv.multi_dof_trajectory_from_chunk(chunk)))
    entries.sort(key=lambda e: e[0])
    types = {image_topic: "sensor_msgs/msg/" + ("CompressedImage" if compressed else "Image"),
             "/gpc/points": "sensor_msgs/msg/PointCloud2", "/ee_pose": "geometry_msgs/msg/PoseStamped",
             "/gpc/action_chunk": "trajectory_msgs/msg/MultiDOFJointTrajectory"}
    with BagWriter(path, storage) as writer:
        for topic, msgtype in types.items():
            if topic not in skip:
                writer.add_topic(topic, msgtype)
        for t, topic, msg in entries:
            if topic not in skip:
                writer.write(topic, int(round(t * 1e9)) + 1_000_000, serialize_message(msg))
    return path
