"""gpc_ros's LeRobotDataset v3.0 against lerobot's own loader and writer (slow; its own environment).

lerobot 0.4.4 pins torch < 2.11 and cannot sit beside this project's torch 2.13, so this test builds a throwaway
venv OUTSIDE .venv (``$GPC_LEROBOT_VENV`` or ``~/.cache/gpc_ros/lerobot-0.4.4-venv``, reused while its stamp
matches ``PACKAGES``): lerobot installed ``--no-deps`` beside the packages its dataset module imports. torch and
torchvision must match each other: PyPI's torchvision fails to import beside the CPU torch 2.13.0, so the venv
takes the torch 2.14.1 / torchvision 0.29.1 / torchcodec 0.17 (CUDA builds, run on the CPU; ~6 GB, ~5 min to
build here). Videos are decoded by lerobot's ``torchcodec`` backend (its ``pyav`` one needs torchvision's
VideoReader, gone since 0.26), which needs FFmpeg's shared libraries (apt ``ffmpeg``, in ./run's list).
``test/policies/lerobot_probe.py`` runs in that venv with ``HF_HUB_OFFLINE=1``. Where the venv cannot be built
(no package index) the tests skip and print why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpc_ros.policies.dataset import EpisodeDataset, write_episodes
from gpc_ros.policies.lerobot import stats as lrstats
from gpc_ros.policies.lerobot.format import DEFAULT_FEATURES
from gpc_ros.policies.lerobot.reader import LeRobotReader
from gpc_ros.policies.lerobot.training_data import LeRobotEpisodeDataset
from gpc_ros.policies.lerobot.video import decode_video, psnr
from gpc_ros.policies.lerobot.writer import write_lerobot_dataset

from .test_lerobot import CAMERA, LENGTHS, MIN_PSNR_DB, NAMES, TASKS, source_episodes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # the first run builds a ~6 GB venv

LEROBOT = "lerobot==0.4.4"
PACKAGES = (
    "torch==2.14.1", "torchvision==0.29.1", "torchcodec==0.17.0", "datasets==4.8.5", "huggingface-hub==0.35.3",
    "pandas==3.1.1", "pyarrow==26.0.1", "pillow==13.0.0", "av==15.1.0", "fsspec==2026.2.0", "accelerate==1.15.0",
    "jsonlines==4.0.0", "packaging==26.4", "draccus==0.10.0", "einops==0.8.2", "deepdiff==9.1.0",
    "termcolor==3.3.0", "imageio==2.38.2", "numpy==2.4.6")
PROBE = Path(__file__).with_name("lerobot_probe.py")
ACTION_HORIZON, OBS_HORIZON = 4, 2
AV1_MIN_PSNR_DB = 35.0
"""lerobot's default recording codec (libsvtav1, crf 30, yuv420p) on the smooth 48x64 test pattern: 41.5 dB measured."""


@pytest.fixture(autouse=True)
def frame_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GPC_ROS_CACHE", str(tmp_path / "cache"))


def _venv_dir() -> Path:
    override = os.environ.get("GPC_LEROBOT_VENV")
    return Path(override) if override else Path.home() / ".cache" / "gpc_ros" / "lerobot-0.4.4-venv"


def _build_venv(venv: Path) -> Path:
    """Create (or reuse) the lerobot venv; ``pytest.skip`` with pip's last words if the index is unreachable."""
    stamp_text = "\n".join([LEROBOT, *PACKAGES])
    python = venv / "bin" / "python"
    stamp = venv / ".gpc_ros-stamp"
    if stamp.is_file() and stamp.read_text() == stamp_text and python.is_file():
        return python
    if not python.is_file():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)

    def pip(*args: str) -> None:
        run = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args],
                             check=False, capture_output=True, text=True, timeout=3000)
        if run.returncode != 0:
            tail = " | ".join(line for line in (run.stdout + run.stderr).splitlines()[-6:]
                              if not line.startswith("WARNING"))
            print(f"lerobot environment: pip install {' '.join(args)} failed: {tail}")
            pytest.skip(f"cannot build the lerobot environment at {venv} (no package index?): {tail}")

    pip(*PACKAGES)
    pip("--no-deps", LEROBOT)
    stamp.write_text(stamp_text)
    return python


@pytest.fixture(scope="module")
def lerobot_python(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    python = _build_venv(_venv_dir())
    home = tmp_path_factory.mktemp("hf")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))},
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(home / "home"),
           "HF_DATASETS_CACHE": str(home / "datasets"), "HF_LEROBOT_HOME": str(home / "lerobot"),
           "OMP_NUM_THREADS": "1"}
    check = subprocess.run([str(python), "-c", "import torchcodec.decoders, lerobot.datasets.lerobot_dataset"],
                           check=False, capture_output=True, text=True, env=env, timeout=600)
    if check.returncode != 0:
        reason = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else "unknown"
        if "libavutil" in check.stderr or "FFmpeg" in check.stderr or "ffmpeg" in check.stderr:
            pytest.skip(f"lerobot's torchcodec needs FFmpeg's shared libraries (apt ffmpeg): {reason}")
        raise AssertionError(f"the lerobot environment at {python.parent.parent} does not import: {check.stderr}")
    return python, env


def _probe(lerobot_python, *args: str) -> None:
    python, env = lerobot_python
    run = subprocess.run([str(python), str(PROBE), *args], check=False, capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, f"lerobot probe {args[0]} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def test_lerobots_loader_reads_what_gpc_ros_writes(lerobot_python, tmp_path):
    episodes = source_episodes()
    root = write_lerobot_dataset(tmp_path / "ours", episodes, 10, video_keys=[CAMERA], names=NAMES,
                                 robot_type="franka_fr3", max_data_file_frames=18, max_video_file_frames=18)
    assert len(list(root.glob("data/*/*.parquet"))) == 2 and len(list(root.glob("videos/*/*/*.mp4"))) == 2
    _probe(lerobot_python, "load", str(root), str(tmp_path / "out.npz"), str(ACTION_HORIZON), str(OBS_HORIZON))
    out = np.load(tmp_path / "out.npz")
    n = sum(LENGTHS)
    # lengths, boundaries, tasks
    assert int(out["len"]) == n and int(out["num_episodes"]) == 3
    assert out["index"].tolist() == list(range(n))
    assert out["episode_index"].tolist() == [e for e, length in enumerate(LENGTHS) for _ in range(length)]
    assert out["frame_index"].tolist() == [t for length in LENGTHS for t in range(length)]
    assert out["tasks"].tolist() == [TASKS[e] for e, length in enumerate(LENGTHS) for _ in range(length)]
    meta = json.loads(str(out["meta"]))
    assert meta["tasks"] == ["reach", "reach the block"]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in meta["episodes"]] == [(0, 7), (7, 18),
                                                                                          (18, 23)]
    # windows and padding flags: lerobot's delta_timestamps == gpc_ros's windows, values exact
    npz = write_episodes(tmp_path / "npz", [{k: v for k, v in e.items() if k != "task"} for e in episodes], 10.0)
    ref = EpisodeDataset(npz, ["observation.state", CAMERA], OBS_HORIZON, ACTION_HORIZON).batch(np.arange(n))
    assert np.array_equal(out["action"], ref["action"])
    assert np.array_equal(out["observation.state"], ref["observation.state"].astype(np.float32))
    assert np.array_equal(out["action_is_pad"], ref["action_is_pad"])
    assert np.array_equal(out["observation.state_is_pad"], ref["observation.state_is_pad"])
    assert out["action_is_pad"][6].tolist() == [False, True, True, True]
    # every video frame decoded by lerobot (torchcodec, within its 1e-4 s tolerance, or it raises) is the
    # source frame of that timestamp: PSNR bound, and no other frame of the episode is closer
    frames = out[CAMERA]
    assert frames.shape == (n, OBS_HORIZON, 32, 32, 3)
    assert np.array_equal(out[f"{CAMERA}_is_pad"], ref[f"{CAMERA}_is_pad"])
    assert psnr(frames, ref[CAMERA]) >= MIN_PSNR_DB
    source = np.concatenate([e[CAMERA] for e in episodes]).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    for i in range(n):
        e = int(out["episode_index"][i])
        own = source[starts[e]:starts[e] + LENGTHS[e]]
        t = int(out["frame_index"][i])
        errors = np.abs(own - frames[i, -1].astype(np.float64)).mean(axis=(1, 2, 3))
        assert int(np.argmin(errors)) == t, (i, errors)
    print(f"lerobot loaded gpc_ros's dataset: {n} frames, video PSNR {psnr(frames, ref[CAMERA]):.1f} dB")


def _lerobot_source(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    lengths, n = [6, 9, 4], 19
    yy, xx = np.mgrid[0:48, 0:64]
    image = np.stack([np.stack([np.clip(xx * 3 + t * 2, 0, 255), yy * 4 + t, np.full_like(xx, 40 + t * 9)], -1)
                      for t in range(n)]).astype(np.uint8)  # smooth gradients that move from frame to frame
    src = {"lengths": np.array(lengths), "tasks": np.array(["pick", "place", "pick"]), "fps": np.array(15),
           "vcodec": np.array("libsvtav1"), "state": rng.normal(size=(n, 7)).astype(np.float32),
           "action": rng.normal(size=(n, 8)).astype(np.float32), "image": image}
    np.savez(path, **src)
    return src


def test_gpc_ros_reads_what_lerobots_writer_produced(lerobot_python, tmp_path):
    src = _lerobot_source(tmp_path / "source.npz")
    root = tmp_path / "theirs"
    _probe(lerobot_python, "write", str(root), str(tmp_path / "source.npz"))
    reader = LeRobotReader(root)
    lengths = src["lengths"].tolist()
    assert reader.fps == 15 and reader.info["robot_type"] == "franka_fr3"
    assert [r["length"] for r in reader.episodes] == lengths
    assert reader.tasks == ["pick", "place"] and [reader.task(e) for e in range(3)] == ["pick", "place", "pick"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    key = "observation.images.front"
    for e, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        values = reader.episode_arrays(e, ["observation.state", "action"])
        assert np.array_equal(values["observation.state"], src["state"][start:start + length])
        assert np.array_equal(values["action"], src["action"][start:start + length])
        frames, _ = decode_video(reader.video_path(e, key))
        first = round(reader.episodes[e][f"videos/{key}/from_timestamp"] * reader.fps)
        assert psnr(frames[first:first + length], src["image"][start:start + length]) >= AV1_MIN_PSNR_DB
    # the training windows open on it (video decoded through the frame cache, resized to 48 -> the policy's 32)
    ds = LeRobotEpisodeDataset(root, ["observation.image", "observation.state"], 2, 4, image_size=32)
    assert ds.values("observation.image").shape == (sum(lengths), 32, 32, 3)
    # lerobot's stats.json == the stats gpc_ros computes (and writes) for the same frames
    theirs = json.loads((root / "meta/stats.json").read_text())
    ours_root = write_lerobot_dataset(
        tmp_path / "ours", ({"observation.state": src["state"][s:s + n], "action": src["action"][s:s + n],
                             key: src["image"][s:s + n], "task": str(task)}
                            for s, n, task in zip(starts, lengths, src["tasks"], strict=True)), 15, video_keys=[key])
    ours = json.loads((ours_root / "meta/stats.json").read_text())
    assert set(theirs) == set(ours) == {"observation.state", "action", key, *DEFAULT_FEATURES}
    for feature in theirs:
        assert set(theirs[feature]) == set(lrstats.STAT_KEYS), feature
        for stat in lrstats.STAT_KEYS:
            assert np.allclose(np.asarray(ours[feature][stat]), np.asarray(theirs[feature][stat]), rtol=1e-9,
                               atol=1e-9), (feature, stat)
