"""``gpc-ros collect``: bad input in one sentence; a dataset EpisodeDataset loads; resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpc_ros.policies.dataset import EpisodeDataset, episode_path
from gpc_ros.sim.collect import dataset_hash
from gpc_ros.testing.spin import wait_until

KEYS = ["observation.image", "observation.image_wrist", "observation.pointcloud", "observation.state"]


def _collect(capsys, *args: str) -> tuple[int, str]:
    """Run ``gpc-ros collect`` in this process (a subprocess would re-import torch for every case)."""
    from gpc_ros.sim.collect import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_input_is_refused_in_one_sentence(tmp_path, capsys):
    code, line = _collect(capsys, "--task", "push_blue", "--episodes", "1", "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown task 'push_blue'; known tasks: push_red" in line
    code, line = _collect(capsys, "--episodes", "1", "--out", str(tmp_path / "a"), "--seed", "1.5")
    assert code == 2 and "--seed must be an integer, got '1.5'" in line
    code, line = _collect(capsys, "--episodes", "0", "--out", str(tmp_path / "a"))
    assert code == 2 and "--episodes must be an integer >= 1" in line
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, line = _collect(capsys, "--episodes", "1", "--out", str(other))
    assert code == 2 and "is not empty and holds no dataset.json" in line
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset.json").write_text(json.dumps({"format": "gpc_ros.episodes", "info": {"task": "push_red",
                                                                                            "seed": 7}}))
    code, line = _collect(capsys, "--episodes", "1", "--out", str(foreign), "--seed", "0")
    assert code == 2 and "holds a different dataset (task 'push_red', seed 7" in line
    assert sorted(x.name for x in foreign.iterdir()) == ["dataset.json"]  # nothing half-written
    assert not (tmp_path / "a").exists()
    p = subprocess.run([sys.executable, "-m", "gpc_ros.cli", "sim-server", "--task", "push_blue"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "unknown task 'push_blue'" in p.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # three expert episodes with rendering; minutes each on a loaded 2-core machine
def test_collect_writes_a_loadable_dataset_and_resumes_after_a_kill(tmp_path):
    out = tmp_path / "push"
    argv = [sys.executable, "-m", "gpc_ros.cli", "collect", "--episodes", "2", "--out", str(out), "--seed", "40"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def alive() -> None:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]

        # first episode written: kill during the second
        wait_until(lambda: episode_path(out, 0).exists(), 600.0, "the first episode file", period_s=0.2, check=alive)
        first = episode_path(out, 0).read_bytes()
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["num_episodes"] == 1 and not episode_path(out, 1).exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert episode_path(out, 0).read_bytes() == first  # resumed, not redone
    meta = json.loads((out / "dataset.json").read_text())
    seeds = [e["seed"] for e in meta["info"]["episodes"]] + [f["seed"] for f in meta["info"]["failed_attempts"]]
    # attempt j uses seed 40 + j; failed attempts (the expert missed) are listed, not written
    assert meta["num_episodes"] == 2 and sorted(seeds) == list(range(40, meta["info"]["next_attempt"] + 40))
    assert dataset_hash(out) in done.stdout
    assert not list(Path(out).glob(".*.partial"))
    ds = EpisodeDataset(out, KEYS, obs_horizon=2, action_horizon=16)
    batch = ds.batch(np.arange(len(ds)))
    assert batch["observation.image"].shape[2:] == (96, 96, 3) and batch["observation.image"].dtype == np.uint8
    assert batch["observation.image_wrist"].shape[2:] == (96, 96, 3)
    assert batch["observation.pointcloud"].shape[2:] == (512, 3)
    assert batch["observation.state"].shape[2:] == (10,) and batch["action"].shape[1:] == (16, 10)
    cloud = batch["observation.pointcloud"]
    assert cloud[..., 2].min() > 0.004  # cropped just above the table top (z = 0)
    assert np.all(np.isfinite(batch["action"]))
