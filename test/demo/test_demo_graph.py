"""``gpc-ros demo`` (issue 15): the whole graph on the simulated push_red cell, as a newcomer runs it.

Real processes throughout: the demo command in a subprocess starts franky-sim with the cell, the sim clock, the
camera and point-cloud nodes, the two policy hosts with the shipped parents, the composer, the driver and the
recorder (each test's own loopback address and ROS domain, leased by the demo). Episodes are short (``--time-limit``)
so the default run stays small; the machine's load sets the wall time (the graph runs on the simulated clock).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(1500)

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"^\[bringup\] started (\S+) \(pid (\d+)\)$", re.M)


def demo(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpc_ros.cli", "demo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **kwargs)


def started_pids(out: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in STARTED.findall(out)}


def assert_all_gone(pids: dict[str, int]) -> None:
    """Every process the demo started has exited (a pid reused since would not run gpc_ros code)."""
    alive = {}
    for name, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if "zombie" not in status.lower() and "gpc_ros" in cmdline:
            alive[name] = pid
    assert not alive, f"processes left behind: {alive}"


def read_until(proc: subprocess.Popen, pattern: str, timeout_s: float) -> str:
    """The demo's output up to the first line matching ``pattern`` (bounded; fails with the output so far)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return "".join(lines)
        if time.monotonic() > deadline:
            pytest.fail(f"no line matching {pattern!r} within {timeout_s} s:\n" + "".join(lines)[-4000:])
    raise AssertionError(f"the demo ended before {pattern!r}:\n" + "".join(lines)[-4000:])


def test_one_episode_demo_runs_the_graph_and_leaves_a_video_a_plot_and_a_readable_bag(tmp_path) -> None:
    from gpc_ros.monitor.bag import IMAGE, MULTI_DOF_TRAJECTORY, POSE_STAMPED, read_bag

    out_dir = tmp_path / "demo"
    proc = demo("--episodes", "1", "--time-limit", "1.5", "--replay-chunks", "1", "--out", str(out_dir))
    try:
        out, _ = proc.communicate(timeout=1400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-5000:]
    pids = started_pids(out)
    assert set(pids) == {"sim", "sim_clock", "camera_front", "pointcloud_node", "franka_driver", "rgb_host",
                         "dp3_host", "composer", "recorder"}
    assert_all_gone(pids)
    # the episode line: success (either way), duration, chunks, latency, interventions
    line = re.search(r"^episode 1 seed 100000 \[composed: rgb [\d.]+ dp3 [\d.]+\]: success (YES|no) .*, "
                     r"([\d.]+) s simulated "
                     r".*, (\d+) chunks, median observation-to-chunk latency ([\d.]+) s, envelope interventions (\d+)$",
                     out, re.M)
    assert line, out[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    episode = summary["episodes"][0]
    assert summary["status"] == 0 and len(summary["episodes"]) == 1
    assert 1.5 <= episode["duration_s"] < 2.5 or episode["success"]  # the time limit (simulated s) ends it
    assert episode["chunks"] == int(line.group(3)) >= 1
    assert 0 < episode["latency_median_s"] < 1.5
    # the bag: rosbags reads it; it holds the chunks the demo counted and the camera frames
    bag = read_bag(out_dir / "recording", {"/gpc/action_chunk": MULTI_DOF_TRAJECTORY, "/ee_pose": POSE_STAMPED,
                                           "/camera/front/color/image_raw": IMAGE})
    assert len(bag.messages["/gpc/action_chunk"]) >= episode["chunks"]
    assert {"/gpc/parents/rgb/chunk", "/gpc/parents/dp3/chunk", "/gpc/points"} <= set(bag.types)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in bag.messages[
        "/camera/front/color/image_raw"]]
    in_episode = sum(episode["start_s"] - 0.05 <= t <= episode["end_s"] + 0.05 for t in stamps)
    # the video decodes back: one 480x360 frame per front image recorded during the episode
    import av

    video = next(out_dir.glob("front_camera.*"))
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == in_episode >= 5
    assert frames[0].shape == (360, 480, 3)
    assert float(np.std(frames[-1])) > 5.0  # a picture, not a blank frame
    # the plot and the replay report
    from PIL import Image

    with Image.open(out_dir / "chunks.png") as png:
        assert png.format == "PNG" and png.size[0] > 600
    report = json.loads((out_dir / "replay" / "report.json").read_text())
    assert report["results"][0]["weights"] == {"rgb": 0.8, "dp3": 0.2}


def test_killing_a_node_during_the_demo_fails_it_naming_the_node_and_leaves_nothing(tmp_path) -> None:
    proc = demo("--episodes", "2", "--time-limit", "4", "--out", str(tmp_path / "demo"), "--replay-chunks", "0")
    try:
        head = read_until(proc, r"^graph up", 1200)
        pids = started_pids(head)
        os.kill(pids["pointcloud_node"], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = head + rest
    assert proc.returncode == 1, out[-4000:]
    assert re.search(rf"^gpc-ros demo: graph failed: pointcloud_node \(pid {pids['pointcloud_node']}\) exited with "
                     r"status -9$", out, re.M), out[-4000:]
    assert_all_gone(pids)
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["status"] == 1


def test_a_graph_that_stops_sending_chunks_fails_the_demo_and_leaves_nothing(tmp_path) -> None:
    """The composer frozen (SIGSTOP: alive, but silent, like a deadlocked or starved process) once the graph is up:
    no chunk arrives, the demo says so after --chunk-timeout, exits 1 and leaves no process (the frozen one too)."""
    proc = demo("--episodes", "2", "--time-limit", "30", "--out", str(tmp_path / "demo"), "--replay-chunks", "0",
                "--chunk-timeout", "15")
    try:
        head = read_until(proc, r"^graph up", 1200)
        pids = started_pids(head)
        os.kill(pids["composer"], signal.SIGSTOP)
        rest, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = head + rest
    assert proc.returncode == 1, out[-4000:]
    assert re.search(r"^gpc-ros demo: graph failed: no chunk arrived for 15 s wall", out, re.M), out[-4000:]
    assert_all_gone(pids)
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["status"] == 1


@pytest.mark.slow
def test_ctrl_c_during_the_demo_stops_every_process(tmp_path) -> None:
    proc = demo("--episodes", "3", "--out", str(tmp_path / "demo"))
    try:
        head = read_until(proc, r"^graph up", 1200)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (head + rest)[-4000:]
    assert "interrupted: stopping every process" in rest
    assert_all_gone(started_pids(head))


def test_bad_options_are_refused_with_one_sentence(tmp_path) -> None:
    proc = demo("--episodes", "0", "--out", str(tmp_path / "x"))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "DemoConfig.episodes must be an int >= 1; got 0" in out
