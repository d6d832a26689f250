"""Training windows over a LeRobotDataset v3.0 folder, and the one place that picks npz or LeRobot.

The key mapping (``TrainConfig.dataset_keys``, ``gpc-ros train --key PARENT_KEY=DATASET_KEY``) says which dataset
feature feeds which parent input::

    {"observation.image": "observation.images.front",   # a video or PNG image feature -> the RGB encoder
     "observation.state": "observation.state",          # a float vector -> the state encoder
     "observation.pointcloud": "observation.pointcloud",  # a (N, 3) float feature -> the point-cloud encoder
     "action": "action"}

A parent input without an entry uses the dataset feature of the same name; ``observation.image`` without an entry
and without a feature of that name uses the dataset's only camera (video or image feature) if it has exactly one.

Images are resized to the policy's resolution (``S x S``, ``cv2.INTER_AREA``) as they are decoded, and the decoded
frames of every video file are cached on disk at that resolution (:class:`FrameCache`), so a second run (another
parent, a resume) does not decode again. Windows use LeRobot's index rule — frame ``t + round(delta * fps)``,
clamped inside the episode, with ``{key}_is_pad`` flags — which for whole-frame deltas is exactly
:class:`~gpc_ros.policies.dataset.EpisodeDataset`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gpc_ros.policies.chunk_policy import ACTION_KEY
from gpc_ros.policies.dataset import META_FILE, EpisodeDataset
from gpc_ros.policies.encoders.observation import IMAGE_KEY, POINTCLOUD_KEY, STATE_KEY
from gpc_ros.policies.lerobot.format import TIMESTAMP_TOLERANCE_S, LeRobotFormatError
from gpc_ros.policies.lerobot.reader import LeRobotReader, is_lerobot_dataset
from gpc_ros.policies.lerobot.video import decode_video

logger = logging.getLogger(__name__)

PARENT_KEYS = (IMAGE_KEY, POINTCLOUD_KEY, STATE_KEY, ACTION_KEY)


def default_cache_dir() -> Path:
    """``$GPC_ROS_CACHE/lerobot_frames`` (default ``~/.cache/gpc_ros/lerobot_frames``)."""
    base = os.environ.get("GPC_ROS_CACHE") or Path.home() / ".cache" / "gpc_ros"
    return Path(base) / "lerobot_frames"


class FrameCache:
    """Decoded frames of a video file at one resolution, as ``.npy`` files keyed by (path, size, mtime, S)."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = self.misses = 0

    def _key(self, path: Path, size: int) -> str:
        st = path.stat()
        raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def frames(self, path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frames (N, S, S, 3) uint8, pts_seconds (N,))`` of ``path``, decoded once."""
        key = self._key(path, size)
        frames_path = self.directory / f"{key}.frames.npy"
        pts_path = self.directory / f"{key}.pts.npy"
        if frames_path.is_file() and pts_path.is_file():
            self.hits += 1
            return np.load(frames_path), np.load(pts_path)
        self.misses += 1
        frames, pts = decode_video(path, size)
        self.directory.mkdir(parents=True, exist_ok=True)
        for target, value in ((pts_path, pts), (frames_path, frames)):
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, value)
            os.replace(tmp, target)
        return frames, pts


def resolve_keys(reader: LeRobotReader, parent_keys: Sequence[str], key_map: Mapping[str, str]) -> dict[str, str]:
    """``{parent key: dataset feature}`` for ``parent_keys`` (see the module docstring)."""
    out = {}
    cameras = reader.video_keys + reader.image_keys
    for parent in parent_keys:
        if parent in key_map:
            feature = key_map[parent]
        elif parent in reader.features:
            feature = parent
        elif parent == IMAGE_KEY and len(cameras) == 1:
            feature = cameras[0]
        else:
            hint = f"; its cameras are {cameras}" if parent == IMAGE_KEY else ""
            raise LeRobotFormatError(
                f"{reader.root}: the parent input {parent!r} has no dataset feature: map one with dataset_keys "
                f"(gpc-ros train --key {parent}=FEATURE){hint}; features are {sorted(reader.features)}")
        if feature not in reader.features:
            raise LeRobotFormatError(f"{reader.root}: dataset_keys maps {parent!r} to {feature!r}, which is not a "
                                     f"feature of meta/info.json ({sorted(reader.features)})")
        dtype = reader.features[feature]["dtype"]
        if parent == IMAGE_KEY and dtype not in ("video", "image"):
            raise LeRobotFormatError(f"{reader.root}: {parent!r} needs a video or image feature; {feature!r} is "
                                     f"{dtype}")
        if parent != IMAGE_KEY and dtype in ("video", "image", "string"):
            raise LeRobotFormatError(f"{reader.root}: {parent!r} needs a numeric feature; {feature!r} is {dtype}")
        out[parent] = feature
    return out


def feature_shapes(directory: str | os.PathLike, parent_keys: Sequence[str], key_map: Mapping[str, str],
                   image_size: int | None = None) -> dict[str, list[int]]:
    """``{parent key: per-step shape}`` the policy will see (for :func:`~gpc_ros.policies.presets.policy_config`).

    The mapped features' shapes; images as ``S x S x 3`` (``image_size``; default the stored size if square and
    <= 96, else 96).
    """
    reader = LeRobotReader(directory, check_videos=False)
    cameras = reader.video_keys + reader.image_keys
    present = [k for k in parent_keys
               if k in key_map or k in reader.features or (k == IMAGE_KEY and len(cameras) == 1)]
    mapping = resolve_keys(reader, present, key_map)
    shapes = {}
    for parent, feature in mapping.items():
        shape = list(reader.features[feature]["shape"])
        if parent == IMAGE_KEY:
            shape = [image_size or default_image_size(shape)] * 2 + [3]
        shapes[parent] = shape
    return shapes


def default_image_size(shape: Sequence[int]) -> int:
    """The policy resolution for stored frames of ``shape``: their size if square and <= 96, else 96."""
    height, width = int(shape[0]), int(shape[1])
    return height if height == width and height <= 96 else 96


class LeRobotEpisodeDataset(EpisodeDataset):
    """:class:`EpisodeDataset` windows over episodes of a LeRobotDataset v3.0 folder (everything in memory)."""

    def __init__(self, directory: str | os.PathLike, keys: Sequence[str], obs_horizon: int, action_horizon: int,
                 episodes: Sequence[int] | None = None, key_map: Mapping[str, str] | None = None,
                 image_size: int | None = None, cache: FrameCache | None = None,
                 reader: LeRobotReader | None = None) -> None:
        self.directory = Path(directory)
        self.reader = reader if reader is not None else LeRobotReader(self.directory)
        self.keys = tuple(dict.fromkeys([*keys, ACTION_KEY]))
        self.mapping = resolve_keys(self.reader, self.keys, dict(key_map or {}))
        self.obs_horizon, self.action_horizon = obs_horizon, action_horizon
        self.meta = {"format": "lerobot", "codebase_version": self.reader.info["codebase_version"],
                     "fps": self.reader.fps, "num_episodes": self.reader.num_episodes, "mapping": self.mapping}
        self.episodes = list(range(self.reader.num_episodes)) if episodes is None else list(episodes)
        if not self.episodes:
            raise ValueError(f"LeRobotEpisodeDataset over {self.directory} selects no episode")
        bad = [e for e in self.episodes if not 0 <= e < self.reader.num_episodes]
        if bad:
            raise ValueError(f"{self.directory} has episodes 0..{self.reader.num_episodes - 1}; asked for {bad}")
        self.cache = cache or FrameCache()
        image_feature = self.mapping.get(IMAGE_KEY)
        if image_feature is not None:
            self.image_size = image_size or default_image_size(self.reader.features[image_feature]["shape"])
        else:
            self.image_size = image_size
        tabular = {p: f for p, f in self.mapping.items()
                   if self.reader.features[f]["dtype"] not in ("video", "image")}
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        for e in self.episodes:
            values = self.reader.episode_arrays(e, list(tabular.values()))
            for parent, feature in tabular.items():
                arrays[parent].append(values[feature].astype(np.float32, copy=False))
            if image_feature is not None:
                arrays[IMAGE_KEY].append(self._images(e, image_feature))
        self._set_episodes(arrays)

    def _images(self, episode: int, feature: str) -> np.ndarray:
        import cv2

        size = self.image_size
        if self.reader.features[feature]["dtype"] == "image":
            frames = self.reader.episode_arrays(episode, [feature])[feature]
            return np.stack([f if f.shape[:2] == (size, size) else
                             cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
        row = self.reader.episodes[episode]
        path = self.reader.video_path(episode, feature)
        frames, pts = self.cache.frames(path, size)
        fps = self.reader.fps
        start = row[f"videos/{feature}/from_timestamp"]
        want = start + np.arange(row["length"]) / fps
        idx = np.round(want * fps).astype(np.int64)
        if idx[-1] >= len(frames):
            raise LeRobotFormatError(f"{path}: decodes to {len(frames)} frames but episode {episode} field "
                                     f"'videos/{feature}/to_timestamp' needs frame {idx[-1]}: the video is shorter "
                                     f"than its episodes")
        off = np.abs(pts[idx] - want)
        if not (off < TIMESTAMP_TOLERANCE_S + 1e-9).all():
            i = int(np.argmax(off))
            raise LeRobotFormatError(f"{path}: frame {idx[i]} of episode {episode} has timestamp {pts[idx[i]]:.6f} s; "
                                     f"'videos/{feature}/from_timestamp' + frame_index / fps = {want[i]:.6f} s "
                                     f"(tolerance {TIMESTAMP_TOLERANCE_S} s)")
        return frames[idx]


def num_episodes(directory: str | os.PathLike) -> int:
    """Episodes in an npz or LeRobot dataset folder."""
    if is_lerobot_dataset(directory):
        return LeRobotReader(directory, check_videos=False).num_episodes
    import json

    meta = Path(directory) / META_FILE
    if not meta.is_file():
        raise FileNotFoundError(f"{directory} is neither a gpc_ros episode dataset ({META_FILE}) nor a LeRobot "
                                f"dataset (meta/info.json)")
    return int(json.loads(meta.read_text())["num_episodes"])


def open_dataset(directory: str | os.PathLike, keys: Sequence[str], obs_horizon: int, action_horizon: int,
                 episodes: Sequence[int] | None = None, key_map: Mapping[str, str] | None = None,
                 image_size: int | None = None, reader: LeRobotReader | None = None) -> EpisodeDataset:
    """An :class:`EpisodeDataset` (npz folder) or :class:`LeRobotEpisodeDataset` (``meta/info.json``)."""
    if is_lerobot_dataset(directory):
        return LeRobotEpisodeDataset(directory, keys, obs_horizon, action_horizon, episodes, key_map, image_size,
                                     reader=reader)
    non_identity = {k: v for k, v in (key_map or {}).items() if k != v}
    if non_identity:
        raise ValueError(f"{directory} is an npz episode dataset whose keys are the parent inputs; dataset_keys "
                         f"{non_identity} applies to LeRobot datasets only")
    return EpisodeDataset(directory, keys, obs_horizon, action_horizon, episodes)
