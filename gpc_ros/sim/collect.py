"""``gpc-ros collect``: record scripted-expert demonstrations of a cell task as a ``gpc_ros.policies.dataset``.

    gpc-ros collect --task push_red --episodes 200 --out /work/data/push_red --seed 0

Each episode runs through the real path (expert chunks -> FrankaExecutor -> franky -> franky-sim) on the simulated
clock and is written as ``episode_NNNNNN.npz`` (keys: ``observation.image``, ``observation.image_wrist``,
``observation.pointcloud``, ``observation.state``, ``action``; layout in docs/sim.md) through a temporary file and
an atomic rename, then ``dataset.json`` is rewritten atomically. Only successful demonstrations are kept; episode
attempt ``j`` uses layout seed ``--seed + j``. Run the same command again after an interruption (a kill, a session
end): it resumes after the last complete episode; a folder holding a different dataset is refused.
``--hash DIR`` prints the dataset's content hash (sha256 over its episode files in order). ``--lerobot DIR``
also writes the finished collection as a LeRobotDataset v3.0 (see docs/policies.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from gpc_ros.policies.dataset import FORMAT, FORMAT_VERSION, META_FILE, episode_path

logger = logging.getLogger(__name__)

COLLECTOR = "gpc_ros.sim.collect"


class DatasetMismatchError(ValueError):
    """The output folder holds another dataset (or other files)."""


def dataset_hash(directory: str | os.PathLike) -> str:
    """sha256 over the dataset's episode files, in index order (names and bytes)."""
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    h = hashlib.sha256()
    for i in range(int(meta["num_episodes"])):
        p = episode_path(d, i)
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _identity(args: argparse.Namespace, cell_config) -> dict:
    identity = {"collector": COLLECTOR, "task": args.task, "seed": args.seed, "cell": dataclasses.asdict(cell_config)}
    return json.loads(json.dumps(identity))  # as stored in dataset.json (tuples become lists)


def _load_progress(out: Path, identity: dict) -> dict | None:
    """The progress of an earlier run of the same collection in ``out`` (None: fresh); refuses foreign folders."""
    meta_path = out / META_FILE
    if not out.exists():
        return None
    if not out.is_dir():
        raise DatasetMismatchError(f"--out {out} is a file, not a folder")
    if not meta_path.is_file():
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if foreign:
            raise DatasetMismatchError(f"--out {out} is not empty and holds no {META_FILE} ({len(foreign)} other "
                                  f"files, e.g. {foreign[0]}); choose an empty or new folder")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise DatasetMismatchError(f"{meta_path} is not valid JSON ({exc}); choose another --out") from None
    info = meta.get("info", {})
    theirs = {k: info.get(k) for k in identity}
    if meta.get("format") != FORMAT or theirs != identity:
        differ = [k for k in identity if theirs[k] != identity[k]]
        raise DatasetMismatchError(f"--out {out} holds a different dataset (task {info.get('task')!r}, seed "
                              f"{info.get('seed')!r}, collector {info.get('collector')!r}; differs in "
                              f"{', '.join(differ) or 'format'}); this run is task {identity['task']!r} seed "
                              f"{identity['seed']!r}: choose another --out")
    return meta


def _write_meta(out: Path, identity: dict, fps: float, keys: dict, episodes: list[dict], next_attempt: int,
                failures: list[dict]) -> None:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fps": fps, "keys": keys,
            "num_episodes": len(episodes),
            "info": {**identity, "action_space": "gpc_ros.action_space (x y z, rotation 6d, gripper)",
                     "next_attempt": next_attempt, "episodes": episodes, "failed_attempts": failures}}
    _atomic_write_bytes(out / META_FILE, lambda f: f.write((json.dumps(meta, indent=1) + "\n").encode()))


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--episodes must be an integer >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``gpc-ros collect``: record expert demonstrations of a cell task into a resumable ``.npz`` folder.

    Args:
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        Exit code: 0 when ``--out`` holds the episodes asked for (or ``--hash`` printed), 1 when the attempt budget
        ran out first, 2 when ``--out`` holds another dataset or the renderer cannot start.
    """
    from gpc_ros.sim.tasks import TASKS

    parser = argparse.ArgumentParser(prog="gpc-ros collect", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="push_red", help=f"cell task ({', '.join(sorted(TASKS))})")
    parser.add_argument("--episodes", type=_positive, help="successful demonstrations wanted in the folder")
    parser.add_argument("--out", type=Path, help="dataset folder (created; resumed if it holds this collection)")
    parser.add_argument("--seed", type=_seed, default=0, help="layout seed of the first episode attempt")
    parser.add_argument("--pace", choices=["fast", "realtime"], default="fast", help="simulator pace")
    parser.add_argument("--max-attempts", type=int, default=0,
                        help="stop after this many attempts in all (default: 2 x episodes + 10)")
    parser.add_argument("--hash", type=Path, metavar="DIR", help="only print the content hash of dataset DIR")
    parser.add_argument("--lerobot", type=Path, metavar="DIR",
                        help="when --out is complete, also write it as a LeRobotDataset v3.0 at DIR (videos, Franka "
                             "names; gpc_ros.policies.lerobot.convert); --out stays the resumable staging folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.hash is not None:
        if not (args.hash / META_FILE).is_file():
            parser.error(f"--hash: {args.hash} is not a dataset folder (no {META_FILE})")
        print(dataset_hash(args.hash))
        return 0
    if args.episodes is None or args.out is None:
        parser.error("--episodes and --out are required")
    if args.task not in TASKS:
        parser.error(f"unknown task {args.task!r}; known tasks: {', '.join(sorted(TASKS))}")
    rc = collect(args)
    if rc == 0 and args.lerobot is not None:
        from gpc_ros.policies.lerobot.convert import npz_to_lerobot

        print(f"wrote {npz_to_lerobot(args.out, args.lerobot, task=args.task, overwrite=True)} (LeRobotDataset v3.0)")
    return rc


def collect(args: argparse.Namespace) -> int:
    """Run the collection described by parsed arguments; 0 when the folder holds the episodes asked for."""
    from tqdm import tqdm

    from gpc_ros.sim.cameras import RendererError
    from gpc_ros.sim.cell import CellConfig, ExpertPolicy, SimCell

    cell_config = CellConfig(task=args.task, pace=args.pace)
    identity = _identity(args, cell_config)
    out: Path = args.out
    try:
        meta = _load_progress(out, identity)
    except DatasetMismatchError as exc:
        print(f"gpc-ros collect: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.partial"):  # an episode being written when the last run was killed
        stale.unlink()
    episodes: list[dict] = list(meta["info"]["episodes"]) if meta else []
    failures: list[dict] = list(meta["info"]["failed_attempts"]) if meta else []
    attempt = int(meta["info"]["next_attempt"]) if meta else 0
    keys = dict(meta["keys"]) if meta else {}
    # files beyond the recorded count (written just before a kill, meta not yet updated) are redone
    for extra in sorted(out.glob("episode_*.npz"))[len(episodes):]:
        extra.unlink()
    max_attempts = args.max_attempts or 2 * args.episodes + 10
    if len(episodes) >= args.episodes:
        print(f"{out}: already holds {len(episodes)} episodes (asked for {args.episodes}); hash {dataset_hash(out)}")
        return 0
    wall0 = time.monotonic()
    done_before = len(episodes)
    try:
        cell = SimCell(cell_config).start()
    except RendererError as exc:
        print(f"gpc-ros collect: error: {exc}", file=sys.stderr)
        return 2
    policy = ExpertPolicy(cell.task)
    fps = cell.task.fps
    try:
        with tqdm(total=args.episodes, initial=len(episodes), unit="ep", desc=f"collect {args.task}") as bar:
            while len(episodes) < args.episodes:
                if attempt >= max_attempts:
                    print(f"gpc-ros collect: stopped after {attempt} attempts with {len(episodes)} successful "
                          f"episodes (the expert failed {len(failures)} times)", file=sys.stderr)
                    return 1
                seed = args.seed + attempt
                result = cell.run_episode(policy, seed, record=True)
                attempt += 1
                if not result.outcome.success:
                    failures.append({"seed": seed, "reason": result.outcome.reason})
                    _write_meta(out, identity, fps, keys, episodes, attempt, failures)
                    continue
                frames = result.frames
                shapes = {k: list(v.shape[1:]) for k, v in frames.items()}
                keys = keys or shapes
                index = len(episodes)
                _atomic_write_bytes(episode_path(out, index), lambda f: np.savez_compressed(f, **frames))
                episodes.append({"index": index, "seed": seed, "steps": result.steps, "approach": policy.approach,
                                 "sim_s": round(result.sim_s, 3), "wall_s": round(result.wall_s, 2),
                                 "faults_recovered": result.faults, "late_steps": result.late_steps})
                _write_meta(out, identity, fps, keys, episodes, attempt, failures)
                bar.update(1)
                minutes = (time.monotonic() - wall0) / 60.0
                bar.set_postfix(ep_per_min=f"{(len(episodes) - done_before) / minutes:.2f}",
                                failed=len(failures))
    finally:
        cell.close()
    minutes = (time.monotonic() - wall0) / 60.0
    print(f"{out}: {len(episodes)} episodes ({len(episodes) - done_before} new in {minutes:.1f} min, "
          f"{(len(episodes) - done_before) / max(minutes, 1e-9):.2f} per wall minute; {len(failures)} failed "
          f"attempts); hash {dataset_hash(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
