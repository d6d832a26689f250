"""LeRobotDataset v3.0 in gpc_ros: write, read back, validate bad folders, train on one, convert npz <-> v3.0.

The check against lerobot's own loader and writer is test_lerobot_compat.py (slow, own environment).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpc_ros.policies.dataset import EpisodeDataset, write_episodes
from gpc_ros.policies.lerobot import stats as lrstats
from gpc_ros.policies.lerobot.format import LeRobotFormatError
from gpc_ros.policies.lerobot.reader import LeRobotReader
from gpc_ros.policies.lerobot.training_data import FrameCache, LeRobotEpisodeDataset
from gpc_ros.policies.lerobot.video import decode_video, encode_video, psnr
from gpc_ros.policies.lerobot.writer import write_lerobot_dataset
from gpc_ros.policies.synthetic import make_episode

from .conftest import TINY_TASK, tiny_config

LENGTHS = (7, 11, 5)
TASKS = ("reach", "reach the block", "reach")
CAMERA = "observation.images.front"
NAMES = {"action": ["ee_x", "ee_y", "ee_z"], "observation.state": ["ee_x", "ee_y", "ee_z"]}
MIN_PSNR_DB = 28.0
"""h264 crf 18 yuv420p on the 32x32 synthetic frames (hard block/disc edges, chroma subsampled) measures ~31 dB."""


def source_episodes(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for length, task in zip(LENGTHS, TASKS, strict=True):
        episode = {k: v[:length] for k, v in make_episode(rng, TINY_TASK).items()}
        episode[CAMERA] = episode.pop("observation.image")
        episode["task"] = task
        out.append(episode)
    return out


@pytest.fixture(autouse=True)
def frame_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GPC_ROS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, list[dict]]:
    """3 episodes (7, 11, 5 frames), 2 tasks, data and video files of at most 18 frames (ep 0+1 | ep 2)."""
    episodes = source_episodes()
    root = write_lerobot_dataset(tmp_path_factory.mktemp("lr") / "ds", episodes, 10, video_keys=[CAMERA],
                                 names=NAMES, robot_type="franka_fr3", max_data_file_frames=18,
                                 max_video_file_frames=18)
    return root, episodes


def fresh_copy(written, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(written[0], root)
    return root


def test_written_folder_is_v30_with_exact_values_boundaries_and_tasks(written):
    root, episodes = written
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "franka_fr3"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 2)
    assert info["splits"] == {"train": "0:3"}
    assert info["features"]["action"]["names"] == NAMES["action"]
    assert info["features"][CAMERA]["info"]["video.codec"] == "h264"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
        "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"]
    assert sorted(p.name for p in (root / "videos" / CAMERA / "chunk-000").iterdir()) == ["file-000.mp4",
                                                                                          "file-001.mp4"]
    # the data columns are exactly the non-video features, timestamps exactly frame_index / fps (float32)
    table = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert set(table.column_names) == {k for k, f in info["features"].items() if f["dtype"] != "video"}
    frame_index = table.column("frame_index").to_numpy()
    assert np.array_equal(table.column("timestamp").to_numpy(), (frame_index / 10).astype(np.float32))
    assert np.array_equal(table.column("index").to_numpy(), np.arange(18))

    reader = LeRobotReader(root)
    assert reader.tasks == ["reach", "reach the block"]
    assert [reader.task(e) for e in range(3)] == list(TASKS)
    assert [(r["dataset_from_index"], r["dataset_to_index"], r["data/file_index"]) for r in reader.episodes] == [
        (0, 7, 0), (7, 18, 0), (18, 23, 1)]
    assert [(r[f"videos/{CAMERA}/file_index"], r[f"videos/{CAMERA}/from_timestamp"],
             r[f"videos/{CAMERA}/to_timestamp"]) for r in reader.episodes] == [(0, 0.0, 0.7), (0, 0.7, 1.8),
                                                                             (1, 0.0, 0.5)]
    for e, episode in enumerate(episodes):
        values = reader.episode_arrays(e, ["action", "observation.state", "observation.pointcloud"])
        for key, value in values.items():
            assert np.array_equal(value, episode[key].astype(np.float32)), key
    # videos: every frame, PSNR against the source
    frames, pts = decode_video(root / "videos" / CAMERA / "chunk-000/file-000.mp4")
    assert len(frames) == 18 and np.allclose(pts, np.arange(18) / 10, atol=1e-4)
    source = np.concatenate([episodes[0][CAMERA], episodes[1][CAMERA]])
    assert psnr(frames, source) >= MIN_PSNR_DB


def test_windows_and_padding_match_the_npz_dataset(written, tmp_path):
    root, episodes = written
    npz = write_episodes(tmp_path / "npz", [{k: v for k, v in e.items() if k != "task"} for e in episodes], 10.0)
    keys = ["observation.state", CAMERA]
    mine = LeRobotEpisodeDataset(root, ["observation.state", "observation.image"], 2, 4,
                                 key_map={"observation.image": CAMERA})
    ref = EpisodeDataset(npz, keys, 2, 4)
    idx = np.arange(len(ref))
    a, b = mine.batch(idx), ref.batch(idx)
    for key in ("action", "observation.state", "action_is_pad", "observation.state_is_pad"):
        assert np.array_equal(a[key], b[key]), key
    assert a["action_is_pad"][6].tolist() == [False, True, True, True]  # last frame of episode 0
    assert a["observation.state_is_pad"][7].tolist() == [True, False]  # first frame of episode 1
    assert a["observation.image"].shape == b[CAMERA].shape
    assert psnr(a["observation.image"], b[CAMERA]) >= MIN_PSNR_DB


def test_png_images_and_point_clouds_are_exact(tmp_path):
    episodes = source_episodes()
    root = write_lerobot_dataset(tmp_path / "png", episodes, 10, image_keys=[CAMERA])
    reader = LeRobotReader(root)
    assert reader.features[CAMERA]["dtype"] == "image" and not reader.video_keys
    assert reader.features["observation.pointcloud"] == {"dtype": "float32", "shape": [64, 3], "names": None}
    for e, episode in enumerate(episodes):
        got = reader.episode_arrays(e, [CAMERA, "observation.pointcloud"])
        assert np.array_equal(got[CAMERA], episode[CAMERA])
        assert np.array_equal(got["observation.pointcloud"], episode["observation.pointcloud"])


def test_stats_hold_lerobots_fields_and_agree_with_numpy(written):
    root, episodes = written
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(json.loads((root / "meta/info.json").read_text())["features"])
    action = np.concatenate([e["action"] for e in episodes]).astype(np.float32)
    s = {k: np.asarray(v) for k, v in stats["action"].items()}
    assert set(s) == set(lrstats.STAT_KEYS)
    assert np.allclose(s["min"], action.min(0)) and np.allclose(s["max"], action.max(0))
    assert np.allclose(s["mean"], action.mean(0), atol=1e-6) and np.allclose(s["std"], action.std(0), atol=1e-6)
    assert s["count"].tolist() == [sum(LENGTHS)]
    for key in lrstats.QUANTILE_KEYS:
        assert np.all(s[key] >= action.min(0) - 1e-6) and np.all(s[key] <= action.max(0) + 1e-6), key
    assert np.all(np.diff(np.stack([s[k] for k in lrstats.QUANTILE_KEYS]), axis=0) >= -1e-9)  # ordered
    image = {k: np.asarray(v) for k, v in stats[CAMERA].items()}
    assert image["mean"].shape == (3, 1, 1) and image["q50"].shape == (3, 1, 1)
    frames = np.concatenate([e[CAMERA] for e in episodes]).astype(np.float64) / 255
    assert np.allclose(image["min"].ravel(), frames.min((0, 1, 2))) and np.allclose(image["max"].ravel(),
                                                                                     frames.max((0, 1, 2)))
    assert np.allclose(image["mean"].ravel(), frames.mean((0, 1, 2)), atol=1e-9)
    # the per-episode stats rows are there too (LeRobot's meta/episodes "stats/<feature>/<stat>" columns)
    row = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[1]
    assert np.allclose(row["stats/action/max"], episodes[1]["action"].max(0))


LEROBOT_NUMBERS = {  # lerobot 0.4.4 get_feature_stats(x, axis=0, keepdims=False), run in the compat environment
    "min": [-156.6929947381184, -156.92951244109565], "max": [315.279557218669, 315.75354297299657],
    "mean": [99.00285486618998, 99.2509421166239], "std": [111.39791717417398, 111.57687781329324],
    "count": [500], "q01": [-143.5721577938141, -143.78892350067832],
    "q10": [-26.99493746043825, -27.130745424431012], "q50": [84.29619029101937, 84.61152887550767],
    "q90": [261.09710825410684, 261.58406482261864], "q99": [309.61588659528513, 310.1758829192079]}


def test_running_quantiles_equal_lerobots_numbers():
    x = np.arange(1000.0).reshape(500, 2) ** 1.5 / 100
    x[::7] *= -0.5
    stats = lrstats.vector_stats(x)
    assert set(stats) == set(LEROBOT_NUMBERS)
    for key, value in LEROBOT_NUMBERS.items():
        assert np.allclose(stats[key], value, rtol=1e-12, atol=1e-12), key


# ----------------------------------------------------------------------------------------------- bad input
def _rewrite_data(root: Path, change) -> Path:
    path = root / "data/chunk-000/file-000.parquet"
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    return path


def _v21(root):
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text('{"episode_index": 0}\n')
    return ["meta/info.json", "codebase_version", "v2.1"]


def _missing_tasks(root):
    (root / "meta/tasks.parquet").unlink()
    return ["meta/tasks.parquet", "missing"]


def _missing_stats(root):
    (root / "meta/stats.json").unlink()
    return ["meta/stats.json", "missing"]


def _missing_episodes(root):
    shutil.rmtree(root / "meta/episodes")
    return ["meta/episodes", "no episodes parquet"]


def _no_footer(root):
    path = root / "data/chunk-000/file-001.parquet"
    path.write_bytes(path.read_bytes()[:-64])
    return ["data/chunk-000/file-001.parquet", "footer"]


def _extra_feature(root):
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.effort"] = {"dtype": "float32", "shape": [7], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    return ["data/chunk-000/file-000.parquet", "observation.effort", "missing"]


def _extra_column(root):
    _rewrite_data(root, lambda t: t.append_column("reward", pa.array(np.zeros(t.num_rows, np.float32))))
    return ["data/chunk-000/file-000.parquet", "reward", "not in features"]


def _off_grid(root):
    def shift(table):
        ts = table.column("timestamp").to_numpy().copy()
        ts[9] += 0.013
        i = table.column_names.index("timestamp")
        return table.set_column(i, "timestamp", pa.array(ts, pa.float32()))
    _rewrite_data(root, shift)
    return ["data/chunk-000/file-000.parquet", "'timestamp'", "frame_index 2"]


def _short_video(root):
    path = root / "videos" / CAMERA / "chunk-000/file-000.mp4"
    frames, _ = decode_video(path)
    path.unlink()
    encode_video(path, frames[:12], 10)
    return [f"videos/{CAMERA}/chunk-000/file-000.mp4", "to_timestamp", "holds 12 frames", "shorter"]


BAD = {"v2.1": _v21, "missing tasks": _missing_tasks, "missing stats": _missing_stats,
       "missing episodes": _missing_episodes, "parquet without footer": _no_footer,
       "feature without column": _extra_feature, "column without feature": _extra_column,
       "timestamp off the fps grid": _off_grid, "video shorter than its episodes": _short_video}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_fail_with_one_sentence_naming_file_and_field_before_training(case, written, tmp_path):
    from gpc_ros.policies.training import TrainConfig, Trainer

    root = fresh_copy(written, tmp_path)
    expected = BAD[case](root)
    with pytest.raises(LeRobotFormatError) as info:
        LeRobotReader(root)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, (part, message)
    out = tmp_path / "run"
    with pytest.raises(LeRobotFormatError):
        Trainer("diffusion", tiny_config("diffusion"), root, out,
                TrainConfig(steps=2, batch_size=4, progress=False, dataset_keys={"observation.image": CAMERA}))
    assert not out.exists()  # nothing trained, nothing written


def test_writer_refuses_bad_input_and_leaves_nothing_half_written(tmp_path):
    episodes = source_episodes()
    with pytest.raises(ValueError, match="fps must be a positive integer"):
        write_lerobot_dataset(tmp_path / "a", episodes, 12.5)
    odd = [dict(e, **{CAMERA: e[CAMERA][:, :31, :31]}) for e in episodes]
    with pytest.raises(ValueError, match="even width and height"):
        write_lerobot_dataset(tmp_path / "b", odd, 10, video_keys=[CAMERA])
    broken = episodes[:2] + [{k: v for k, v in episodes[2].items() if k != "observation.state"}]
    with pytest.raises(ValueError, match="differ from the first episode"):
        write_lerobot_dataset(tmp_path / "c", broken, 10, video_keys=[CAMERA])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no target, no partial folder
    write_lerobot_dataset(tmp_path / "d", episodes[:1], 10)
    with pytest.raises(FileExistsError, match="not empty"):
        write_lerobot_dataset(tmp_path / "d", episodes[:1], 10)


# ----------------------------------------------------------------------------------------------- training
def test_a_parent_trains_on_a_v30_folder_with_the_key_mapping(written, tmp_path):
    from gpc_ros.policies.checkpoint import load_policy
    from gpc_ros.policies.training import TrainConfig, Trainer

    root, _ = written
    config = TrainConfig(steps=6, batch_size=4, val_every=3, checkpoint_every=6, val_fraction=0.3,
                         progress=False, dataset_keys={"observation.image": CAMERA})
    trainer = Trainer("diffusion", tiny_config("diffusion"), root, tmp_path / "run", config)
    assert trainer.train_set.episodes == [0, 1] and trainer.val_set.episodes == [2]
    assert trainer.train_set.mapping["observation.image"] == CAMERA
    trainer.run()
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in trainer.history)
    policy = load_policy(tmp_path / "run" / "checkpoint")
    assert policy.config.observation.image.image_size == 32


def test_gpc_ros_train_on_a_v30_folder(written, tmp_path, capsys):
    from gpc_ros.policies import train_cli

    root, _ = written
    argv = ["--policy", "flow", "--dataset", str(root), "--output", str(tmp_path / "run"), "--size", "tiny",
            "--steps", "4", "--batch-size", "4", "--val-every", "2", "--checkpoint-every", "4", "--no-progress"]
    assert train_cli.main([*argv, "--key", f"observation.image={CAMERA}"]) == 0
    assert (tmp_path / "run/checkpoint/model.safetensors").is_file()
    assert train_cli.main([*argv, "--key", "observation.image=observation.images.wrist"]) == 2
    err = capsys.readouterr().err
    assert "observation.images.wrist" in err and "not a feature" in err
    assert train_cli.main([*argv, "--key", "image=x"]) == 2


def test_decoded_frames_are_cached_at_the_policy_resolution(written, tmp_path):
    root, _ = written
    cache = FrameCache(tmp_path / "frames")
    first = LeRobotEpisodeDataset(root, ["observation.image"], 2, 4, key_map={"observation.image": CAMERA},
                                  image_size=16, cache=cache)
    assert (cache.misses, cache.hits) == (2, 1)  # episodes 0 and 1 share file-000.mp4
    again = LeRobotEpisodeDataset(root, ["observation.image"], 2, 4, key_map={"observation.image": CAMERA},
                                  image_size=16, cache=cache)
    assert (cache.misses, cache.hits) == (2, 4)
    assert np.array_equal(first.values("observation.image"), again.values("observation.image"))
    assert first.values("observation.image").shape == (sum(LENGTHS), 16, 16, 3)
    assert not list((tmp_path / "frames").glob("*.tmp"))


# ----------------------------------------------------------------------------------------------- convert
def test_convert_npz_to_v30_and_back(tmp_path, capsys):
    from gpc_ros.policies.lerobot import dataset_cli

    episodes = [{("observation.image" if k == CAMERA else k): v for k, v in e.items() if k != "task"}
                for e in source_episodes()]
    npz = write_episodes(tmp_path / "npz", episodes, 10.0)
    assert dataset_cli.main(["convert", str(npz), str(tmp_path / "lr"), "--task", "reach", "--no-progress",
                             "--robot-type", "franka_fr3"]) == 0
    assert dataset_cli.main(["info", str(tmp_path / "lr")]) == 0
    out = capsys.readouterr().out
    assert "LeRobotDataset v3.0, 3 episodes, 23 frames at 10 fps" in out and "observation.image: video" in out
    assert dataset_cli.main(["convert", str(tmp_path / "lr"), str(tmp_path / "back"), "--no-progress"]) == 0
    back = EpisodeDataset(tmp_path / "back", ["observation.state", "observation.pointcloud", "observation.image"],
                          1, 1)
    ref = EpisodeDataset(npz, ["observation.state", "observation.pointcloud", "observation.image"], 1, 1)
    for key in ("action", "observation.state", "observation.pointcloud"):
        assert np.array_equal(back.values(key), ref.values(key).astype(np.float32)), key
    assert psnr(back.values("observation.image"), ref.values("observation.image")) >= MIN_PSNR_DB
    assert list(back.episode_length) == list(LENGTHS)
    assert dataset_cli.main(["convert", str(npz), str(tmp_path / "lr"), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_collection_in_gpc_ros_action_space_gets_the_franka_names(tmp_path):
    """The npz folder as ``gpc-ros collect`` leaves it (10-D actions/states, ``info.action_space``); the simulated
    cell itself is exercised by test/sim, this checks what the converter makes of its output."""
    from gpc_ros.action_space import ACTION_DIM, ACTION_NAMES
    from gpc_ros.policies.lerobot.convert import npz_to_lerobot

    rng = np.random.default_rng(3)
    episodes = [{"action": rng.normal(size=(n, ACTION_DIM)), "observation.state": rng.normal(size=(n, ACTION_DIM)),
                 "observation.image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
                 "observation.image_wrist": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)} for n in (5, 8)]
    npz = write_episodes(tmp_path / "npz", episodes, 10.0,
                         info={"action_space": "gpc_ros.action_space (x y z, rotation 6d, gripper)"})
    reader = LeRobotReader(npz_to_lerobot(npz, tmp_path / "lr", task="push_red", progress=False))
    assert reader.info["robot_type"] == "franka_fr3"
    assert reader.features["action"]["names"] == list(ACTION_NAMES) == reader.features["observation.state"]["names"]
    assert reader.video_keys == ["observation.image", "observation.image_wrist"]
    assert reader.tasks == ["push_red"]
    assert np.array_equal(reader.episode_arrays(1, ["action"])["action"], episodes[1]["action"].astype(np.float32))
