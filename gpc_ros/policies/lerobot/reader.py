"""Read a local LeRobotDataset v3.0 folder with pyarrow (+ PyAV for videos), validating it first.

:class:`LeRobotReader` checks the whole folder when it is opened — before anything trains — and raises
:class:`~gpc_ros.policies.lerobot.format.LeRobotFormatError` with one sentence naming the file and the field:
a folder of another version (v2.1: ``meta/episodes.jsonl``), a missing meta file, a parquet file that cannot be
opened (no footer: the writer was never closed), data columns that differ from the non-video ``features``,
episode rows that disagree with the data (``length``, ``dataset_from_index``), ``frame_index`` / ``index`` not
contiguous, timestamps off the ``frame_index / fps`` grid (tolerance 1e-4 s, LeRobot's), a video file that
holds fewer frames than its episodes need.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpc_ros.policies.lerobot.format import (
    CODEBASE_VERSION,
    DEFAULT_FEATURES,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    TIMESTAMP_TOLERANCE_S,
    LeRobotFormatError,
    from_arrow,
)

logger = logging.getLogger(__name__)


def is_lerobot_dataset(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` looks like a LeRobot dataset (has ``meta/info.json``), of any version."""
    return (Path(directory) / INFO_PATH).is_file()


def _read_parquet(path: Path, columns: Sequence[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: file missing")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LeRobotFormatError(f"{path}: not a readable parquet file ({exc}); a file without its footer was "
                                 f"not closed by its writer") from None


class LeRobotReader:
    """Metadata, episodes and per-episode arrays of a validated LeRobotDataset v3.0 folder."""

    def __init__(self, root: str | os.PathLike, check_videos: bool = True) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not self.root.is_dir():
            raise LeRobotFormatError(f"{self.root}: no such dataset folder")
        if not info_path.is_file():
            raise LeRobotFormatError(f"{info_path}: file missing, so {self.root} is not a LeRobot dataset")
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise LeRobotFormatError(f"{info_path}: not valid JSON ({exc})") from None
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise LeRobotFormatError(f"{info_path}: codebase_version is {version!r}; gpc_ros reads LeRobotDataset "
                                     f"{CODEBASE_VERSION!r} only (convert older datasets with lerobot's "
                                     f"convert_dataset_v21_to_v30)")
        for field in ("fps", "features", "data_path", "total_episodes", "total_frames"):
            if field not in self.info:
                raise LeRobotFormatError(f"{info_path}: field {field!r} missing")
        fps = self.info["fps"]
        if not isinstance(fps, (int, float)) or fps <= 0:
            raise LeRobotFormatError(f"{info_path}: field 'fps' must be a positive number; got {fps!r}")
        self.fps = float(fps)
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        for key, feature in self.features.items():
            if not isinstance(feature, dict) or "dtype" not in feature or "shape" not in feature:
                raise LeRobotFormatError(f"{info_path}: features[{key!r}] needs 'dtype' and 'shape'; got {feature!r}")
        missing_defaults = [k for k in DEFAULT_FEATURES if k not in self.features]
        if missing_defaults:
            raise LeRobotFormatError(f"{info_path}: features lack LeRobot's default columns {missing_defaults}")
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] == "image"]
        if self.video_keys and not self.info.get("video_path"):
            raise LeRobotFormatError(f"{info_path}: features {self.video_keys} are videos but 'video_path' is "
                                     f"{self.info.get('video_path')!r}")
        stats_path = self.root / STATS_PATH
        if not stats_path.is_file():
            raise LeRobotFormatError(f"{stats_path}: file missing")
        self.stats = json.loads(stats_path.read_text())
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._data_tables: dict[Path, Any] = {}
        self._check_data()
        if check_videos:
            self._check_videos()

    # ------------------------------------------------------------------ meta
    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset."""
        return len(self.episodes)

    def _load_tasks(self) -> list[str]:
        path = self.root / TASKS_PATH
        table = _read_parquet(path)
        names = table.column_names
        if "task_index" not in names:
            raise LeRobotFormatError(f"{path}: column 'task_index' missing (has {names})")
        task_column = next((c for c in ("__index_level_0__", "task") if c in names), None)
        if task_column is None:
            raise LeRobotFormatError(f"{path}: no task strings (a pandas index '__index_level_0__' or a 'task' "
                                     f"column); has {names}")
        index = table.column("task_index").to_pylist()
        strings = table.column(task_column).to_pylist()
        if sorted(index) != list(range(len(index))):
            raise LeRobotFormatError(f"{path}: task_index must be 0..{len(index) - 1}; got {index}")
        tasks = [""] * len(index)
        for i, s in zip(index, strings, strict=True):
            tasks[i] = s
        return tasks

    def _load_episodes(self) -> list[dict[str, Any]]:
        directory = self.root / EPISODES_DIR
        if (self.root / "meta/episodes.jsonl").is_file():
            raise LeRobotFormatError(f"{self.root / 'meta/episodes.jsonl'}: a v2.x episodes file; gpc_ros reads "
                                     f"LeRobotDataset {CODEBASE_VERSION!r} only")
        paths = sorted(directory.glob("*/*.parquet"))
        if not paths:
            raise LeRobotFormatError(f"{directory}: no episodes parquet file (meta/episodes/chunk-*/file-*.parquet)")
        rows: list[dict[str, Any]] = []
        needed = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                  "dataset_to_index"]
        for key in self.video_keys:
            needed += [f"videos/{key}/{f}" for f in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        for path in paths:
            table = _read_parquet(path)
            absent = [c for c in needed if c not in table.column_names]
            if absent:
                raise LeRobotFormatError(f"{path}: columns {absent} missing")
            keep = needed + (["tasks"] if "tasks" in table.column_names else [])
            rows.extend(table.select(keep).to_pylist())
        rows.sort(key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in rows] != list(range(len(rows))):
            raise LeRobotFormatError(f"{directory}: episode_index must run 0..{len(rows) - 1}; got "
                                     f"{[r['episode_index'] for r in rows]}")
        if len(rows) != self.info["total_episodes"]:
            raise LeRobotFormatError(f"{self.root / INFO_PATH}: total_episodes is {self.info['total_episodes']} but "
                                     f"{directory} lists {len(rows)} episodes")
        start = 0
        for r in rows:
            if r["dataset_from_index"] != start or r["dataset_to_index"] - r["dataset_from_index"] != r["length"]:
                raise LeRobotFormatError(f"{directory}: episode {r['episode_index']} has dataset_from_index "
                                         f"{r['dataset_from_index']}, dataset_to_index {r['dataset_to_index']}, "
                                         f"length {r['length']}; expected from {start} and to = from + length")
            start = r["dataset_to_index"]
        return rows

    # ------------------------------------------------------------------ data
    def data_path(self, episode: int) -> Path:
        """The data parquet holding ``episode``."""
        row = self.episodes[episode]
        return self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])

    def video_path(self, episode: int, key: str) -> Path:
        """The mp4 holding ``episode``'s frames of video feature ``key``."""
        row = self.episodes[episode]
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                          file_index=row[f"videos/{key}/file_index"])

    def _table(self, path: Path):
        if path not in self._data_tables:
            table = _read_parquet(path)
            expected = {k for k, f in self.features.items() if f["dtype"] != "video"}
            have = set(table.column_names) - {"__index_level_0__"}
            if have != expected:
                raise LeRobotFormatError(
                    f"{path}: data columns differ from meta/info.json features: missing "
                    f"{sorted(expected - have)}, not in features {sorted(have - expected)}")
            self._data_tables[path] = table
        return self._data_tables[path]

    def _check_data(self) -> None:
        for path in sorted({self.data_path(e) for e in range(self.num_episodes)}):
            table = self._table(path)
            index = table.column("index").to_numpy()
            episode_index = table.column("episode_index").to_numpy()
            frame_index = table.column("frame_index").to_numpy()
            timestamp = table.column("timestamp").to_numpy().astype(np.float64)
            for e in np.unique(episode_index):
                if not 0 <= e < self.num_episodes:
                    raise LeRobotFormatError(f"{path}: field 'episode_index' holds {e}, not in meta/episodes")
                row = self.episodes[int(e)]
                rows = np.flatnonzero(episode_index == e)
                where = f"{path}: episode {int(e)}"
                if len(rows) != row["length"]:
                    raise LeRobotFormatError(f"{where} has {len(rows)} rows; meta/episodes says length {row['length']}")
                if not np.array_equal(index[rows], np.arange(row["dataset_from_index"], row["dataset_to_index"])):
                    raise LeRobotFormatError(f"{where}: field 'index' must run {row['dataset_from_index']}.."
                                             f"{row['dataset_to_index'] - 1} (meta/episodes)")
                if not np.array_equal(frame_index[rows], np.arange(len(rows))):
                    raise LeRobotFormatError(f"{where}: field 'frame_index' must run 0..{len(rows) - 1}")
                off = np.abs(timestamp[rows] - frame_index[rows] / self.fps)
                bad = np.flatnonzero(off > TIMESTAMP_TOLERANCE_S)
                if bad.size:
                    i = rows[bad[0]]
                    raise LeRobotFormatError(
                        f"{where}: field 'timestamp' is off the fps grid at frame_index {frame_index[i]} "
                        f"({timestamp[i]:.6f} s, expected {frame_index[i] / self.fps:.6f} s = frame_index / fps, "
                        f"tolerance {TIMESTAMP_TOLERANCE_S} s)")
        present = {int(e) for p in self._data_tables.values() for e in np.unique(p.column("episode_index").to_numpy())}
        absent = sorted(set(range(self.num_episodes)) - present)
        if absent:
            raise LeRobotFormatError(f"{self.data_path(absent[0])}: no rows of episode {absent[0]} (meta/episodes "
                                     f"points there)")

    def _check_videos(self) -> None:
        import av

        for key in self.video_keys:
            files: dict[Path, float] = {}
            for e, row in enumerate(self.episodes):
                path = self.video_path(e, key)
                end = row[f"videos/{key}/to_timestamp"]
                span = end - row[f"videos/{key}/from_timestamp"]
                if abs(span - row["length"] / self.fps) > TIMESTAMP_TOLERANCE_S + 1e-9:
                    raise LeRobotFormatError(
                        f"{self.root / EPISODES_DIR}: episode {e} field 'videos/{key}/to_timestamp' - from_timestamp "
                        f"is {span:.6f} s; its {row['length']} frames at {self.fps:g} fps need "
                        f"{row['length'] / self.fps:.6f} s")
                files[path] = max(files.get(path, 0.0), end)
            for path, end in files.items():
                if not path.is_file():
                    raise LeRobotFormatError(f"{path}: video file missing (feature {key!r})")
                try:
                    with av.open(str(path)) as container:
                        stream = container.streams.video[0]
                        frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
                except (av.error.FFmpegError, IndexError) as exc:
                    raise LeRobotFormatError(f"{path}: not a readable video ({exc})") from None
                needed = round(end * self.fps)
                if frames < needed:
                    raise LeRobotFormatError(
                        f"{path}: holds {frames} frames but field 'videos/{key}/to_timestamp' of its episodes needs "
                        f"{needed} ({end:.4f} s at {self.fps:g} fps): the video is shorter than its episodes")

    def episode_arrays(self, episode: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Non-video ``keys`` of one episode -> ``{key: (T, *shape)}``.

        LeRobot's scalar columns -> ``(T,)``; a feature of shape ``[1]`` -> ``(T, 1)``; image features decoded to
        ``(T, H, W, 3)`` uint8.
        """
        path = self.data_path(episode)
        table = self._table(path)
        row = self.episodes[episode]
        index = table.column("index").to_numpy()
        rows = np.flatnonzero((index >= row["dataset_from_index"]) & (index < row["dataset_to_index"]))
        sub = table.take(rows)
        out = {}
        for key in keys:
            feature = self.features[key]
            if feature["dtype"] == "video":
                raise ValueError(f"{key} is a video feature (use video frames)")
            if feature["dtype"] == "image":
                out[key] = np.stack([_decode_png(v["bytes"], f"{path}: {key}")
                                     for v in sub.column(key).to_pylist()])
                continue
            values = from_arrow(sub.column(key), feature, f"{path}: field {key!r}")
            if key not in DEFAULT_FEATURES and list(feature["shape"]) == [1]:
                values = values.reshape(-1, 1)
            out[key] = values
        return out

    def task(self, episode: int) -> str:
        """The task string of an episode's first frame."""
        table = self._table(self.data_path(episode))
        index = table.column("index").to_numpy()
        first = int(np.flatnonzero(index == self.episodes[episode]["dataset_from_index"])[0])
        return self.tasks[int(table.column("task_index")[first].as_py())]


def _decode_png(data: bytes, where: str) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise LeRobotFormatError(f"{where}: an image that does not decode")
    return img[..., ::-1].copy()
