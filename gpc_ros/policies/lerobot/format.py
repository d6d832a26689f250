"""LeRobotDataset v3.0 on disk: paths, feature descriptions and the arrow types of the data columns.

A dataset folder (LeRobot ``CODEBASE_VERSION = "v3.0"``)::

    meta/info.json                          codebase_version, fps, robot_type, totals, path templates, features
    meta/stats.json                         {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/tasks.parquet                      pandas frame: index = task string, column task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: episode_index, tasks, length,
                                            data/chunk_index, data/file_index, dataset_from_index, dataset_to_index,
                                            videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
                                            meta/episodes/{chunk_index,file_index}, stats/<feature>/<stat>
    data/chunk-000/file-000.parquet         one row per frame, many episodes per file: every non-video feature
    videos/<key>/chunk-000/file-000.mp4     frames of several episodes one after the other

Column types (what ``datasets`` writes and LeRobot's loader casts to): a feature of shape ``(1,)`` is a plain
column, ``(n,)`` a ``fixed_size_list<n>``, ``(a, b)`` a ``list<list>``; ``image`` features are
``struct<bytes: binary, path: string>`` holding PNG bytes; ``video`` features have no column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
TIMESTAMP_TOLERANCE_S = 1e-4
"""LeRobot's default ``tolerance_s``: timestamps and decoded frames must sit this close to ``frame_index / fps``."""


class LeRobotFormatError(ValueError):
    """A folder is not a readable LeRobotDataset v3.0 (the message names the file and the field)."""


def chunk_file(n: int, chunks_size: int = DEFAULT_CHUNK_SIZE) -> tuple[int, int]:
    """The ``(chunk_index, file_index)`` of the ``n``-th file (LeRobot's ``update_chunk_file_indices`` order)."""
    return divmod(n, chunks_size)


def arrow_type(feature: dict[str, Any]):
    """The pyarrow type of a non-video feature's data column."""
    import pyarrow as pa

    dtype, shape = feature["dtype"], tuple(feature["shape"])
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if dtype == "string":
        return pa.string()
    value = pa.from_numpy_dtype(np.dtype(dtype))
    if shape == (1,):
        return value
    if len(shape) == 1:
        return pa.list_(value, shape[0])
    typ = value
    for _ in shape:
        typ = pa.list_(typ)
    return typ


def to_arrow(values: np.ndarray, feature: dict[str, Any]):
    """``(T, *shape)`` numpy values -> a pyarrow array of the feature's column type."""
    import pyarrow as pa

    dtype, shape = feature["dtype"], tuple(feature["shape"])
    arr = np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype), copy=False))
    n = len(arr)
    if shape == (1,):
        return pa.array(arr.reshape(n))
    if len(shape) == 1:
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), shape[0])
    out = pa.array(arr.reshape(-1))
    for size in reversed(shape):
        offsets = pa.array(np.arange(len(out) // size + 1, dtype=np.int32) * size)
        out = pa.ListArray.from_arrays(offsets, out)
    return out


def from_arrow(column, feature: dict[str, Any], where: str) -> np.ndarray:
    """A data column (list / fixed-size-list / plain) -> ``(T, *shape)`` numpy.

    Raises ``LeRobotFormatError`` when the stored values do not have the shape ``features`` declares.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    shape = tuple(feature["shape"])
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    flat = column
    while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type) or pa.types.is_large_list(flat.type):
        flat = pc.list_flatten(flat)
    values = flat.to_numpy(zero_copy_only=False)
    expected = n * int(np.prod(shape))
    if values.size != expected:
        raise LeRobotFormatError(f"{where}: column holds {values.size} values for {n} rows; features declare shape "
                                 f"{list(shape)} ({expected} values)")
    return values.reshape(n, *shape) if shape != (1,) else values.reshape(n)
