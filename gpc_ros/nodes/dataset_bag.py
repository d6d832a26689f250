"""Demonstration episodes as rosbag2 bags that ``gpc-ros replay`` reads: one MCAP bag per episode.

The offline proxy of docs/monitoring.md ("Offline proxy vs success rate") replays held-out expert demonstrations
through the parents and compares the composed chunks with the demonstrated actions. This module writes a
gpc_ros npz episode dataset (:mod:`gpc_ros.policies.dataset`) as the bags the recorder would have written, with the
topics and conventions :func:`gpc_ros.monitor.replay_io.load_recording` reads. Frame ``k`` of an episode is
stamped ``t_k = start_time_s + k / fps`` (log time = stamp) and gives:

- ``/camera/<camera_name>/color/image_raw`` ``sensor_msgs/Image`` rgb8: ``observation.image`` as stored (already the
  parents' size, so the replay's ``fit_image`` leaves it unchanged);
- ``/gpc/points`` ``sensor_msgs/PointCloud2`` in ``fr3_link0``: ``observation.pointcloud`` (xyz float32 as stored; an
  ``(N, 6)`` cloud's colour, [0, 1], as the packed ``rgb`` field);
- ``/ee_pose`` ``geometry_msgs/PoseStamped``: position ``state[0:3]``, orientation = the quaternion of the 6-D
  rotation ``state[3:9]`` (:func:`gpc_ros.action_space.quaternion_from_rotation_6d`);
- ``/joint_states`` ``sensor_msgs/JointState`` with the two finger joints only, position ``state[9] / 2`` each,
  velocity and effort 0 (the dataset holds no arm joint angles; replay reads the gripper width as the fingers' sum);
- every ``chunk_every`` frames (the decision frames; 8 = the benchmark's ``replan_every``), ``/gpc/action_chunk``
  ``trajectory_msgs/MultiDOFJointTrajectory``: the demonstrated actions ``action[k : k + horizon]`` (the last one
  repeated past the episode's end, as in training) as the composer would publish a chunk planned from observation
  ``t_k`` (:func:`gpc_ros.action_space.actions_to_chunk`: first step due at ``t_k + 1 / fps``). Replay then decides
  at ``stamp - first_action_delay_s = t_k`` (its default delay 0.1 s = one period at 10 Hz) and measures the error
  of its chunk against these demonstrated actions.

Messages are built by :mod:`gpc_ros.nodes.conversions` and serialised by rclpy, as the recorder stores them; bags
are written by :class:`gpc_ros.monitor.bag.BagWriter` (atomic). One bag per episode, so that no observation
window or chunk spans two episodes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

STATE_KEY, IMAGE_KEY, POINTS_KEY, ACTION_KEY = ("observation.state", "observation.image", "observation.pointcloud",
                                                "action")
POINTS_TOPIC, STATE_TOPIC, JOINTS_TOPIC, CHUNK_TOPIC = ("/gpc/points", "/ee_pose", "/joint_states",
                                                        "/gpc/action_chunk")


@dataclass(frozen=True)
class DemoBagConfig:
    """How demonstration episodes become bags."""

    start_time_s: float = 100.0
    """Stamp of each episode's first frame (s). Small on purpose: at ~1.7e9 s a float64 resolves only ~0.2 us and
    the replay's "at or before" comparisons allow 1 ns."""
    horizon: int = 16
    """Demonstrated steps per recorded chunk (the parents' action horizon)."""
    chunk_every: int = 8
    """A recorded chunk (a decision of the replay) every this many frames, from frame 0."""
    camera_name: str = "camera"
    """Images on /camera/<camera_name>/color/image_raw."""
    image_key: str = IMAGE_KEY
    """Which dataset image feeds the colour topic."""
    storage: str = "mcap"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_time_s) and 0 <= self.start_time_s <= 1e6):
            raise ValueError(f"DemoBagConfig.start_time_s must be in [0, 1e6] s, got {self.start_time_s!r}")
        for name in ("horizon", "chunk_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"DemoBagConfig.{name} must be an int >= 1, got {value!r}")
        if not self.camera_name or "/" in self.camera_name:
            raise ValueError(f"DemoBagConfig.camera_name must be a non-empty name without '/', got "
                             f"{self.camera_name!r}")
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"DemoBagConfig.storage must be 'mcap' or 'sqlite3', got {self.storage!r}")

    @property
    def image_topic(self) -> str:
        """The colour image topic."""
        return f"/camera/{self.camera_name}/color/image_raw"


def read_meta(dataset: str | Path) -> dict:
    """The dataset's ``dataset.json`` (a gpc_ros npz episode dataset), or ValueError naming the folder."""
    import json

    from gpc_ros.policies.dataset import FORMAT, META_FILE

    path = Path(dataset) / META_FILE
    if not path.is_file():
        raise ValueError(f"{dataset} is not a gpc_ros episode dataset (no {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format must be {FORMAT!r}, got {meta.get('format')!r}")
    return meta


def demo_chunks(actions: np.ndarray, horizon: int, every: int) -> list[tuple[int, np.ndarray]]:
    """``(decision frame k, actions[k : k + horizon] with the last row repeated past the end)`` every ``every``."""
    last = len(actions) - 1
    return [(k, actions[np.minimum(np.arange(k, k + horizon), last)]) for k in range(0, len(actions), every)]


def episode_to_bag(dataset: str | Path, episode: int, out: str | Path,
                   config: DemoBagConfig | None = None) -> Path:
    """Write episode ``episode`` of ``dataset`` as the bag ``out`` (see the module docstring); returns ``out``."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    from gpc_ros.action_space import actions_to_chunk, quaternion_from_rotation_6d
    from gpc_ros.monitor.bag import BagWriter
    from gpc_ros.nodes import conversions as cv
    from gpc_ros.policies.dataset import episode_path

    config = config or DemoBagConfig()
    meta = read_meta(dataset)
    if not (isinstance(episode, int) and 0 <= episode < meta["num_episodes"]):
        raise ValueError(f"episode must be in 0..{meta['num_episodes'] - 1} for {dataset}, got {episode!r}")
    missing = [k for k in (STATE_KEY, config.image_key, POINTS_KEY, ACTION_KEY) if k not in meta["keys"]]
    if missing:
        raise ValueError(f"{dataset} has no {missing}; it has {sorted(meta['keys'])}")
    dt = 1.0 / float(meta["fps"])
    with np.load(episode_path(Path(dataset), episode)) as data:
        state, image, points, actions = (np.asarray(data[k]) for k in (STATE_KEY, config.image_key, POINTS_KEY,
                                                                       ACTION_KEY))
    if state.shape[1:] != (10,) or actions.shape[1:] != (10,):
        raise ValueError(f"episode {episode} of {dataset}: state and action must be (T, 10) in the action layout of "
                         f"gpc_ros.action_space, got {state.shape} and {actions.shape}")
    times = config.start_time_s + dt * np.arange(len(state))
    quats = quaternion_from_rotation_6d(state[:, 3:9].astype(np.float64))
    entries = []  # (stamp s, order, topic, message)
    for k, t in enumerate(times):
        stamp = cv.seconds_to_stamp(float(t))
        entries.append((t, 0, config.image_topic, cv.rgb_to_image_msg(image[k], stamp, "camera_color_optical_frame")))
        cloud = points[k]
        colors = None if cloud.shape[-1] < 6 else np.rint(np.clip(cloud[:, 3:6], 0.0, 1.0) * 255.0).astype(np.uint8)
        entries.append((t, 1, POINTS_TOPIC, cv.pointcloud2_msg(cloud[:, :3], stamp, cv.BASE_FRAME, colors)))
        snap = type("Snapshot", (), {"ee_position_m": state[k, :3].astype(np.float64),
                                     "ee_quaternion_xyzw": quats[k]})
        entries.append((t, 2, STATE_TOPIC, cv.pose_stamped_from_snapshot(snap, stamp)))
        # velocity and effort filled: with an empty float64 sequence last, rclpy's CDR of this 2-name message
        # ends in 4 padding bytes that rosbags rejects ("CDR message size mismatch")
        joints = JointState(name=list(cv.FINGER_JOINT_NAMES), position=[float(state[k, 9]) / 2.0] * 2,
                            velocity=[0.0, 0.0], effort=[0.0, 0.0])
        joints.header.stamp = stamp
        entries.append((t, 3, JOINTS_TOPIC, joints))
    for k, chunk_actions in demo_chunks(actions, config.horizon, config.chunk_every):
        chunk = actions_to_chunk(chunk_actions, float(times[k]), dt)
        entries.append((chunk.start_time_s, 4, CHUNK_TOPIC, cv.multi_dof_trajectory_from_chunk(chunk)))
    entries.sort(key=lambda e: (e[0], e[1]))
    types = {config.image_topic: "sensor_msgs/msg/Image", POINTS_TOPIC: "sensor_msgs/msg/PointCloud2",
             STATE_TOPIC: "geometry_msgs/msg/PoseStamped", JOINTS_TOPIC: "sensor_msgs/msg/JointState",
             CHUNK_TOPIC: "trajectory_msgs/msg/MultiDOFJointTrajectory"}
    with BagWriter(out, config.storage) as writer:
        for topic, msgtype in types.items():
            writer.add_topic(topic, msgtype)
        for t, _, topic, msg in entries:
            writer.write(topic, int(round(t * 1e9)), serialize_message(msg))
    return Path(out)


def parse_episodes(text: str, num_episodes: int) -> list[int]:
    """``"180:200"`` (a half-open range), ``"3"`` or ``"1,5,7"`` -> episode indices, checked against the dataset."""
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            episodes = list(range(int(a) if a else 0, int(b) if b else num_episodes))
        else:
            episodes = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--episodes takes A:B, N or N,M,..., got {text!r}") from None
    bad = [e for e in episodes if not 0 <= e < num_episodes]
    if not episodes or bad:
        raise ValueError(f"--episodes {text!r} selects {'no episode' if not episodes else f'episodes {bad}'} outside "
                         f"0..{num_episodes - 1}")
    return episodes


def dataset_to_bags(dataset: str | Path, out_dir: str | Path, episodes: Sequence[int],
                    config: DemoBagConfig | None = None, progress: bool = False) -> list[Path]:
    """One bag ``out_dir/episode_<NNNNNN>`` per episode; an existing bag is never overwritten (BagError)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iterator = list(episodes)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="episodes -> bags", unit="episode")
    paths = [episode_to_bag(dataset, int(e), out_dir / f"episode_{int(e):06d}", config) for e in iterator]
    logger.info("wrote %d bags to %s", len(paths), out_dir)
    return paths
