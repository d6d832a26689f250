"""``gpc-ros dataset``: inspect and convert datasets (gpc_ros npz episodes <-> LeRobotDataset v3.0).

Examples::

    gpc-ros dataset info data/reach_lerobot
    gpc-ros dataset convert data/reach data/reach_lerobot --task "reach above the block" --robot-type franka_fr3
    gpc-ros dataset convert data/reach_lerobot data/reach_npz        # the other way (direction from the source)
    gpc-ros dataset to-bag data/push_red bags/push_red_val --episodes 180:200   # one bag per episode, for replay
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The ``gpc-ros dataset`` argument parser."""
    p = argparse.ArgumentParser(prog="gpc-ros dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="validate a dataset folder and summarise it")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    conv = sub.add_parser("convert", help="npz -> LeRobot v3.0 or LeRobot v3.0 -> npz (from the source's format)")
    conv.add_argument("source", type=Path)
    conv.add_argument("target", type=Path)
    conv.add_argument("--images", choices=("video", "image"), default="video",
                      help="npz -> LeRobot: store images as mp4 (default) or PNG bytes in the parquet")
    conv.add_argument("--task", default="", help="npz -> LeRobot: the task string of every episode")
    conv.add_argument("--robot-type", help="npz -> LeRobot: info.json robot_type")
    conv.add_argument("--max-file-frames", type=int, help="npz -> LeRobot: start a new data/video file after this "
                                                          "many frames (default: one file)")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing target")
    conv.add_argument("--no-progress", action="store_true")
    bag = sub.add_parser("to-bag", help="npz episodes -> one rosbag2 MCAP bag each, for gpc-ros replay "
                                        "(gpc_ros.nodes.dataset_bag)")
    bag.add_argument("source", type=Path)
    bag.add_argument("target", type=Path, help="folder of the bags episode_<NNNNNN>/")
    bag.add_argument("--episodes", default=":", help="A:B (half-open), N or N,M,... (default: all)")
    bag.add_argument("--chunk-every", type=int, default=8, help="a demonstrated chunk every N frames")
    bag.add_argument("--horizon", type=int, default=16, help="demonstrated steps per chunk")
    bag.add_argument("--no-progress", action="store_true")
    return p


def summary(path: Path) -> dict:
    """What ``info`` prints: format, fps, episodes, frames, tasks, features (validated first)."""
    from gpc_ros.policies.lerobot.reader import LeRobotReader, is_lerobot_dataset

    if is_lerobot_dataset(path):
        reader = LeRobotReader(path)
        lengths = [r["length"] for r in reader.episodes]
        return {"format": f"LeRobotDataset {reader.info['codebase_version']}", "fps": reader.fps,
                "robot_type": reader.info.get("robot_type"), "episodes": reader.num_episodes,
                "frames": sum(lengths), "episode_lengths": [min(lengths), max(lengths)], "tasks": reader.tasks,
                "features": {k: {"dtype": f["dtype"], "shape": list(f["shape"]), "names": f.get("names")}
                             for k, f in reader.features.items()}}
    from gpc_ros.policies.dataset import META_FILE, EpisodeDataset

    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path} is neither a LeRobot dataset (meta/info.json) nor a gpc_ros episode "
                                f"dataset ({META_FILE})")
    meta = json.loads((path / META_FILE).read_text())
    ds = EpisodeDataset(path, [k for k in meta["keys"] if k != "action"], 1, 1)
    return {"format": f"{meta['format']} v{meta['format_version']}", "fps": meta["fps"],
            "episodes": meta["num_episodes"], "frames": len(ds),
            "episode_lengths": [int(ds.episode_length.min()), int(ds.episode_length.max())],
            "features": {k: {"shape": v} for k, v in meta["keys"].items()}}


def main(argv: list[str] | None = None) -> int:
    """Run ``gpc-ros dataset``; 0 on success, 2 on bad input (one sentence on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gpc_ros.policies.lerobot.format import LeRobotFormatError
    from gpc_ros.policies.lerobot.reader import is_lerobot_dataset

    try:
        if args.command == "info":
            data = summary(args.path)
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                print(f"{args.path}: {data['format']}, {data['episodes']} episodes, {data['frames']} frames at "
                      f"{data['fps']:g} fps (lengths {data['episode_lengths'][0]}..{data['episode_lengths'][1]})")
                if data.get("tasks") is not None:
                    print(f"  tasks: {data['tasks']}")
                for key, f in data["features"].items():
                    names = f" names {f['names']}" if f.get("names") else ""
                    print(f"  {key}: {f.get('dtype', '')} {f['shape']}{names}")
            return 0
        if args.command == "to-bag":
            from gpc_ros.nodes.dataset_bag import DemoBagConfig, dataset_to_bags, parse_episodes, read_meta

            episodes = parse_episodes(args.episodes, read_meta(args.source)["num_episodes"])
            config = DemoBagConfig(horizon=args.horizon, chunk_every=args.chunk_every)
            paths = dataset_to_bags(args.source, args.target, episodes, config, progress=not args.no_progress)
            print(f"wrote {len(paths)} bags to {args.target}")
            return 0
        from gpc_ros.policies.lerobot.convert import lerobot_to_npz, npz_to_lerobot

        if is_lerobot_dataset(args.source):
            out = lerobot_to_npz(args.source, args.target, progress=not args.no_progress)
        else:
            out = npz_to_lerobot(args.source, args.target, images=args.images, task=args.task,
                                 robot_type=args.robot_type, overwrite=args.overwrite, progress=not args.no_progress,
                                 max_data_file_frames=args.max_file_frames, max_video_file_frames=args.max_file_frames)
        print(f"wrote {out}")
        return 0
    except (LeRobotFormatError, ValueError, KeyError, FileNotFoundError, FileExistsError) as exc:
        print(f"gpc-ros dataset: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
