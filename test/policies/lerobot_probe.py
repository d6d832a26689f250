"""Runs INSIDE the throwaway lerobot environment (never imports gpc_ros): lerobot's own loader and writer.

    python lerobot_probe.py load ROOT OUT.npz [ACTION_HORIZON OBS_HORIZON]
        LeRobotDataset(root=ROOT) with delta_timestamps for action / observation.state / the video keys; every item
        -> OUT.npz (index, episode_index, frame_index, task strings, the windows, *_is_pad, video frames as uint8
        from lerobot's float [0, 1], the loaded stats and metadata as JSON).
    python lerobot_probe.py write ROOT SOURCE.npz
        LeRobotDataset.create + add_frame + save_episode of the episodes in SOURCE.npz (written by the test).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def load(root: str, out: str, action_horizon: int = 4, obs_horizon: int = 2) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata("gpc_ros/probe", root=root)
    fps = meta.fps
    deltas = {"action": [i / fps for i in range(action_horizon)],
              "observation.state": [i / fps for i in range(1 - obs_horizon, 1)]}
    for key in meta.video_keys:
        deltas[key] = [i / fps for i in range(1 - obs_horizon, 1)]
    ds = LeRobotDataset("gpc_ros/probe", root=root, delta_timestamps=deltas, video_backend="torchcodec")
    items = [ds[i] for i in range(len(ds))]
    result = {"len": np.array(len(ds)), "num_episodes": np.array(ds.num_episodes),
              "tasks": np.array([it["task"] for it in items]),
              "meta": np.array(json.dumps({"info": meta.info, "tasks": list(meta.tasks.index),
                                           "episodes": [dict(r) for r in meta.episodes]}, default=str)),
              "stats": np.array(json.dumps({k: {s: np.asarray(v).tolist() for s, v in d.items()}
                                            for k, d in meta.stats.items()}))}
    for key in ("index", "episode_index", "frame_index", "timestamp", "task_index"):
        result[key] = np.stack([it[key].numpy() for it in items])
    for key in ["action", "observation.state", *meta.video_keys]:
        values = np.stack([it[key].numpy() for it in items])
        if key in meta.video_keys:  # lerobot: (T, C, H, W) float in [0, 1] -> (T, H, W, C) uint8
            values = np.round(values.transpose(0, 1, 3, 4, 2) * 255.0).astype(np.uint8)
        result[key] = values
        result[f"{key}_is_pad"] = np.stack([it[f"{key}_is_pad"].numpy() for it in items])
    np.savez(out, **result)


def write(root: str, source: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src = np.load(source)
    lengths = src["lengths"].tolist()
    tasks = src["tasks"].tolist()
    h, w = src["image"].shape[1:3]
    features = {
        "observation.state": {"dtype": "float32", "shape": (src["state"].shape[1],), "names": None},
        "action": {"dtype": "float32", "shape": (src["action"].shape[1],), "names": None},
        "observation.images.front": {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create("gpc_ros/probe", fps=int(src["fps"]), features=features, root=root,
                               robot_type="franka_fr3", use_videos=True, vcodec=str(src["vcodec"]))
    start = 0
    for length, task in zip(lengths, tasks, strict=True):
        for t in range(start, start + length):
            ds.add_frame({"observation.state": src["state"][t], "action": src["action"][t],
                          "observation.images.front": src["image"][t], "task": task})
        ds.save_episode()
        start += length
    ds.finalize()


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6]))
    elif sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
