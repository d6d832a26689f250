"""Write episodes as a LeRobotDataset v3.0 folder (pyarrow + PyAV; no lerobot import).

What is guaranteed (and checked against lerobot's own loader in ``test/policies/test_lerobot_compat.py``):
``timestamp = frame_index / fps`` exactly (float32), a contiguous global ``index``, data parquet columns equal to
the non-video features, per-episode and dataset stats as LeRobot computes them (quantiles included, images per
channel), ``meta/tasks.parquet`` with its pandas index, episode rows whose file indices and offsets come from
integer frame counts (``from_timestamp = frames before the episode in the mp4 / fps``), every parquet closed with
its footer. The folder is built under a temporary name beside ``root`` and renamed into place at the end, so a
failure never leaves a half-written dataset at ``root``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gpc_ros.policies.lerobot import stats as lrstats
from gpc_ros.policies.lerobot.format import (
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_DATA_FILE_SIZE_IN_MB,
    DEFAULT_FEATURES,
    DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    EPISODES_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    arrow_type,
    chunk_file,
    to_arrow,
)
from gpc_ros.policies.lerobot.video import CODEC_NAMES, DEFAULT_CODEC, video_info

logger = logging.getLogger(__name__)

TASK_KEY = "task"


class _VideoFile:
    """One mp4 being filled with the frames of consecutive episodes (pts = frame number, time base 1/fps)."""

    def __init__(self, path: Path, fps: int, codec: str, crf: int, gop: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps = path, fps
        self.container = av.open(str(path), mode="w", format="mp4")
        self.codec, self.crf, self.gop = codec, crf, gop
        self.stream = None
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        import av

        if self.stream is None:
            height, width = frames.shape[1:3]
            if height % 2 or width % 2:
                raise ValueError(f"{self.path}: yuv420p video needs an even width and height; frames are "
                                 f"{width}x{height}")
            options = {"g": str(self.gop), "crf": str(self.crf)}
            if self.codec == "libx264":
                options["bf"] = "0"
            self.stream = self.container.add_stream(self.codec, rate=Fraction(self.fps), options=options)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.time_base = Fraction(1, self.fps)
            self.stream.codec_context.time_base = Fraction(1, self.fps)
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames
            video_frame.time_base = Fraction(1, self.fps)
            for packet in self.stream.encode(video_frame):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def infer_features(episode: Mapping[str, np.ndarray], video_keys: Sequence[str] = (),
                   image_keys: Sequence[str] = (), names: Mapping[str, Sequence[str]] | None = None) -> dict:
    """LeRobot feature descriptions of an episode's arrays (``(T, *shape)`` each; ``task`` is not a feature)."""
    names = dict(names or {})
    features: dict[str, dict[str, Any]] = {}
    for key, value in episode.items():
        if key == TASK_KEY or key in DEFAULT_FEATURES:
            continue
        arr = np.asarray(value)
        shape = list(arr.shape[1:]) or [1]
        if key in video_keys or key in image_keys:
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"{key}: a video or image feature must be (T, H, W, 3) uint8; got {arr.shape} "
                                 f"{arr.dtype}")
            features[key] = {"dtype": "video" if key in video_keys else "image", "shape": shape,
                             "names": ["height", "width", "channels"]}
            continue
        if arr.dtype == np.float64:
            dtype = "float32"
        elif arr.dtype.kind in "iu" and arr.dtype != np.uint8:
            dtype = "int64"
        else:
            dtype = arr.dtype.name
        if dtype not in ("float32", "int64", "uint8", "bool"):
            raise ValueError(f"{key}: unsupported dtype {arr.dtype} (float, int, uint8 or bool arrays)")
        key_names = names.get(key)
        if key_names is not None and len(shape) == 1 and len(key_names) != shape[0]:
            raise ValueError(f"names[{key!r}] lists {len(key_names)} names for {shape[0]} dimensions")
        features[key] = {"dtype": dtype, "shape": shape, "names": list(key_names) if key_names else None}
    return features


def _png(frame: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _tasks_table(tasks: Sequence[str]):
    """``meta/tasks.parquet`` as ``pandas.DataFrame({"task_index": ...}, index=tasks).to_parquet()`` writes it."""
    import pyarrow as pa

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(list(tasks), pa.string())})
    pandas_meta = {"index_columns": ["__index_level_0__"],
                   "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                       "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_lerobot_dataset(root: str | os.PathLike, episodes: Iterable[Mapping[str, Any]], fps: int, *,
                          video_keys: Sequence[str] = (), image_keys: Sequence[str] = (),
                          names: Mapping[str, Sequence[str]] | None = None, robot_type: str | None = None,
                          default_task: str = "", max_data_file_frames: int | None = None,
                          max_video_file_frames: int | None = None, codec: str = DEFAULT_CODEC, crf: int = 18,
                          gop: int = 2, chunks_size: int = DEFAULT_CHUNK_SIZE, overwrite: bool = False,
                          progress: bool = False, total: int | None = None) -> Path:
    """Write ``episodes`` as a LeRobotDataset v3.0 at ``root``; returns ``root``.

    ``episodes``: mappings of ``(T, *shape)`` arrays with the same keys, plus an optional ``"task"`` string.

    ``video_keys`` are stored as mp4, ``image_keys`` as PNG bytes in the parquet, every other array as a numeric
    feature (float64 is stored as float32). A new data (video) file starts when the next episode would take the
    current one past ``max_data_file_frames`` (``max_video_file_frames``); ``None`` = one file (LeRobot splits by
    size; episodes never straddle files either way). ``names`` gives per-dimension names (e.g. the Franka
    conventions of :mod:`gpc_ros.action_space`).
    """
    root = Path(root)
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps must be a positive integer (LeRobot stores an int); got {fps!r}")
    fps = int(fps)
    if codec not in CODEC_NAMES:
        raise ValueError(f"codec must be one of {sorted(CODEC_NAMES)}; got {codec!r}")
    overlap = set(video_keys) & set(image_keys)
    if overlap:
        raise ValueError(f"keys {sorted(overlap)} are listed both as video and as image keys")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} exists and is not empty (pass overwrite=True to replace it)")
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        summary = _write(tmp, episodes, fps, list(video_keys), list(image_keys), names, robot_type, default_task,
               max_data_file_frames, max_video_file_frames, codec, crf, gop, chunks_size, progress, total)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
        logger.info("wrote %s to %s", summary, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write(root: Path, episodes: Iterable[Mapping[str, Any]], fps: int, video_keys: list[str],
           image_keys: list[str], names, robot_type, default_task: str, max_data_frames, max_video_frames,
           codec: str, crf: int, gop: int, chunks_size: int, progress: bool, total: int | None) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    features: dict[str, dict[str, Any]] | None = None
    tasks: dict[str, int] = {}
    episode_rows: list[dict[str, Any]] = []
    dataset_stats: dict | None = None
    data_writer = None
    data_file_no, data_file_frames = -1, 0
    videos: dict[str, _VideoFile] = {}
    video_file_no = {k: -1 for k in video_keys}
    first_video_path: dict[str, Path] = {}
    global_index = 0
    schema = None
    bar = tqdm(episodes, total=total, disable=not progress, desc="write LeRobot dataset", unit="episode")
    try:
        for ep_index, episode in enumerate(bar):
            arrays = {k: np.asarray(v) for k, v in episode.items() if k != TASK_KEY}
            lengths = {k: len(v) for k, v in arrays.items()}
            if len(set(lengths.values())) != 1 or not lengths:
                raise ValueError(f"episode {ep_index}: arrays must share their length; got {lengths}")
            length = next(iter(lengths.values()))
            if length < 1:
                raise ValueError(f"episode {ep_index} is empty")
            missing = [k for k in (*video_keys, *image_keys) if k not in arrays]
            if missing:
                raise ValueError(f"episode {ep_index} lacks the video/image keys {missing}")
            ep_features = infer_features(arrays, video_keys, image_keys, names)
            if features is None:
                features = ep_features
            elif ep_features != features:
                raise ValueError(f"episode {ep_index}: features {ep_features} differ from the first episode's "
                                 f"{features}")
            task = str(episode.get(TASK_KEY, default_task))
            task_index = tasks.setdefault(task, len(tasks))
            frame_index = np.arange(length, dtype=np.int64)
            defaults = {"timestamp": (frame_index / fps).astype(np.float32), "frame_index": frame_index,
                        "episode_index": np.full(length, ep_index, np.int64),
                        "index": np.arange(global_index, global_index + length, dtype=np.int64),
                        "task_index": np.full(length, task_index, np.int64)}
            # ---- data parquet (features order, then LeRobot's default columns)
            all_features = {**features, **DEFAULT_FEATURES}
            columns, fields = [], []
            for key, feature in all_features.items():
                if feature["dtype"] == "video":
                    continue
                if feature["dtype"] == "image":
                    column = pa.array([{"bytes": _png(f), "path": None} for f in arrays[key]], arrow_type(feature))
                else:
                    column = to_arrow(defaults[key] if key in defaults else arrays[key], feature)
                columns.append(column)
                fields.append(pa.field(key, arrow_type(feature)))
            table = pa.Table.from_arrays(columns, schema=pa.schema(fields))
            if schema is None:
                schema = table.schema
            if data_writer is None or (max_data_frames and data_file_frames + length > max_data_frames):
                if data_writer is not None:
                    data_writer.close()
                data_file_no += 1
                data_file_frames = 0
                chunk, file = chunk_file(data_file_no, chunks_size)
                path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=True)
            data_writer.write_table(table)
            chunk, file = chunk_file(data_file_no, chunks_size)
            row: dict[str, Any] = {"episode_index": ep_index, "tasks": [task], "length": length,
                                   "data/chunk_index": chunk, "data/file_index": file,
                                   "dataset_from_index": global_index, "dataset_to_index": global_index + length}
            data_file_frames += length
            # ---- videos
            for key in video_keys:
                current = videos.get(key)
                if current is None or (max_video_frames and current.frames + length > max_video_frames):
                    if current is not None:
                        current.close()
                    video_file_no[key] += 1
                    vchunk, vfile = chunk_file(video_file_no[key], chunks_size)
                    path = root / VIDEO_PATH.format(video_key=key, chunk_index=vchunk, file_index=vfile)
                    current = videos[key] = _VideoFile(path, fps, codec, crf, gop)
                    first_video_path.setdefault(key, path)
                vchunk, vfile = chunk_file(video_file_no[key], chunks_size)
                start = current.frames
                current.add(arrays[key])
                row.update({f"videos/{key}/chunk_index": vchunk, f"videos/{key}/file_index": vfile,
                            f"videos/{key}/from_timestamp": start / fps,
                            f"videos/{key}/to_timestamp": (start + length) / fps})
            # ---- stats (every feature incl. LeRobot's default columns, as its save_episode does)
            ep_stats = {}
            for key, feature in all_features.items():
                values = defaults[key] if key in defaults else arrays[key]
                if key == "timestamp":  # LeRobot's stats see the float64 frame_index / fps, the parquet float32
                    values = frame_index / fps
                if feature["dtype"] in ("video", "image"):
                    ep_stats[key] = lrstats.image_stats(values)
                else:
                    ep_stats[key] = lrstats.vector_stats(values)
            dataset_stats = ep_stats if dataset_stats is None else lrstats.aggregate_stats([dataset_stats, ep_stats])
            for key, feature_stats in ep_stats.items():
                for stat, value in feature_stats.items():
                    row[f"stats/{key}/{stat}"] = np.asarray(value).tolist()
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
            episode_rows.append(row)
            global_index += length
    finally:
        bar.close()
        if data_writer is not None:
            data_writer.close()
        for video in videos.values():
            video.close()
    if features is None:
        raise ValueError("no episodes to write")
    # ---- meta
    meta_features = {}
    for key, feature in {**features, **DEFAULT_FEATURES}.items():
        feature = dict(feature)
        if feature["dtype"] == "video":
            feature["info"] = video_info(first_video_path[key])
        meta_features[key] = feature
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episode_rows),
            "total_frames": global_index, "total_tasks": len(tasks), "chunks_size": chunks_size,
            "data_files_size_in_mb": DEFAULT_DATA_FILE_SIZE_IN_MB,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILE_SIZE_IN_MB, "fps": fps,
            "splits": {"train": f"0:{len(episode_rows)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if video_keys else None, "features": meta_features}
    (root / "meta").mkdir(parents=True, exist_ok=True)
    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path, compression="snappy")
    pq.write_table(_tasks_table(list(tasks)), root / TASKS_PATH)
    (root / STATS_PATH).write_text(json.dumps(lrstats.to_json(dataset_stats), indent=4) + "\n")
    (root / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")
    return f"{len(episode_rows)} episodes ({global_index} frames, {len(tasks)} tasks)"
