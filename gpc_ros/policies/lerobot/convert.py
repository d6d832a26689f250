"""Convert between gpc_ros npz episode folders and LeRobotDataset v3.0 (both directions, values kept exactly).

npz -> LeRobot: every key of ``dataset.json`` becomes a feature of the same name (``action`` and
``observation.state`` of a dataset recorded in :mod:`gpc_ros.action_space`, e.g. by ``gpc-ros collect``, get its
per-dimension ``ACTION_NAMES`` and ``robot_type`` ``franka_fr3``); uint8 ``(H, W, 3)`` images become
videos (default) or PNG image features, point clouds a float32 ``(N, 3)`` feature; ``fps`` must be an integer.
LeRobot -> npz: every non-string feature (videos decoded, full resolution) of every episode, LeRobot's own index
columns left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gpc_ros.policies.dataset import META_FILE, episode_path, write_episodes
from gpc_ros.policies.lerobot.format import DEFAULT_FEATURES
from gpc_ros.policies.lerobot.reader import LeRobotReader
from gpc_ros.policies.lerobot.video import decode_video
from gpc_ros.policies.lerobot.writer import write_lerobot_dataset

logger = logging.getLogger(__name__)

FRANKA_ROBOT_TYPE = "franka_fr3"
"""``robot_type`` of datasets recorded with gpc_ros's action space (the simulated cell, the FR3 driver)."""


def npz_to_lerobot(source: str | os.PathLike, target: str | os.PathLike, *, images: str = "video",
                   task: str = "", robot_type: str | None = None, names: Mapping[str, Sequence[str]] | None = None,
                   overwrite: bool = False, progress: bool = True, **writer_options: Any) -> Path:
    """Write the npz dataset ``source`` as a LeRobotDataset v3.0 at ``target``."""
    import json

    source = Path(source)
    meta_path = source / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{source} is not a gpc_ros episode dataset (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    if images not in ("video", "image"):
        raise ValueError(f"images must be 'video' or 'image'; got {images!r}")
    fps = float(meta["fps"])
    if abs(fps - round(fps)) > 1e-9:
        raise ValueError(f"{meta_path}: fps {fps} is not an integer; LeRobot datasets store an integer fps")
    info = meta.get("info", {})
    if names is None and str(info.get("action_space", "")).startswith("gpc_ros.action_space"):
        from gpc_ros.action_space import ACTION_DIM, ACTION_NAMES

        names = {k: list(ACTION_NAMES) for k in ("action", "observation.state")
                 if k in meta["keys"] and meta["keys"][k] == [ACTION_DIM]}
    if robot_type is None and names:
        robot_type = FRANKA_ROBOT_TYPE
    image_keys = [k for k, shape in meta["keys"].items() if len(shape) == 3 and shape[-1] == 3
                  and "image" in k]

    def episodes() -> Iterator[dict[str, Any]]:
        for e in range(int(meta["num_episodes"])):
            with np.load(episode_path(source, e)) as data:
                episode = {k: data[k] for k in meta["keys"]}
            episode["task"] = task
            yield episode

    return write_lerobot_dataset(
        target, episodes(), round(fps), video_keys=image_keys if images == "video" else (),
        image_keys=image_keys if images == "image" else (), names=names,
        robot_type=robot_type or info.get("robot_type"), overwrite=overwrite, progress=progress,
        total=int(meta["num_episodes"]), **writer_options)


def lerobot_to_npz(source: str | os.PathLike, target: str | os.PathLike, progress: bool = True) -> Path:
    """Write the LeRobotDataset ``source`` as a gpc_ros npz episode folder at ``target``."""
    reader = LeRobotReader(source)
    keys = [k for k, f in reader.features.items() if k not in DEFAULT_FEATURES and f["dtype"] != "string"]
    tabular = [k for k in keys if reader.features[k]["dtype"] != "video"]
    decoded: dict[Path, np.ndarray] = {}

    def episodes() -> Iterator[dict[str, np.ndarray]]:
        for e in tqdm(range(reader.num_episodes), disable=not progress, desc="convert", unit="episode"):
            episode = reader.episode_arrays(e, tabular)
            for key in reader.video_keys:
                path = reader.video_path(e, key)
                if path not in decoded:
                    decoded.clear()
                    decoded[path] = decode_video(path)[0]
                start = round(reader.episodes[e][f"videos/{key}/from_timestamp"] * reader.fps)
                episode[key] = decoded[path][start:start + reader.episodes[e]["length"]]
            yield episode

    info = {"source": f"LeRobotDataset {reader.info['codebase_version']} {Path(source).resolve()}",
            "robot_type": reader.info.get("robot_type"), "tasks": reader.tasks,
            "names": {k: reader.features[k].get("names") for k in keys}}
    return write_episodes(target, episodes(), reader.fps, info=info)
