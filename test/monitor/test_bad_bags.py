"""Bad bags: one clear error naming the topic or the file, and no report written (not even a partial one)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gpc_ros.monitor.bag import BagError, BagWriter, read_bag
from gpc_ros.monitor.replay_cli import main as replay_main

from .recorded import CHECKPOINTS, make_session, write_session

PARENTS = ["--parent", f"rgb={CHECKPOINTS / 'diffusion_rgb'}", "--parent", f"pcd={CHECKPOINTS / 'flow_pointcloud'}",
           "--max-chunks", "1", "--steps", "2"]


@pytest.fixture(scope="module")
def session():
    return make_session(seed=5, duration_s=1.5)


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def good_bag(request, session, tmp_path_factory):
    return write_session(session, tmp_path_factory.mktemp(request.param) / "good", storage=request.param)


def run_cli(bag, tmp_path, capsys) -> str:
    out = tmp_path / "report"
    assert replay_main([str(bag), *PARENTS, "--out", str(out)]) == 2
    assert not out.exists(), "a bad bag must not leave a (partial) report"
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"one sentence expected, got {err!r}"
    return err


def data_file(bag):
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.97])
def test_truncated_bag_names_the_file(good_bag, tmp_path, capsys, fraction):
    bag = tmp_path / "truncated"
    shutil.copytree(good_bag, bag)
    f = data_file(bag)
    f.write_bytes(f.read_bytes()[:int(f.stat().st_size * fraction)])
    err = run_cli(bag, tmp_path, capsys)
    assert str(bag) in err and ("truncated" in err or "corrupt" in err)


def test_corrupt_bytes_name_the_file_or_topic(good_bag, tmp_path, capsys):
    bag = tmp_path / "corrupt"
    shutil.copytree(good_bag, bag)
    f = data_file(bag)
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(data), 400):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))
    err = run_cli(bag, tmp_path, capsys)
    assert str(bag) in err


def test_missing_metadata_and_missing_bag_name_the_file(good_bag, tmp_path, capsys):
    bag = tmp_path / "no_metadata"
    shutil.copytree(good_bag, bag)
    (bag / "metadata.yaml").unlink()
    assert str(bag) in run_cli(bag, tmp_path, capsys)
    assert "does not exist" in run_cli(tmp_path / "nothing_here", tmp_path, capsys)


def test_missing_topic_is_named(session, tmp_path, capsys):
    bag = write_session(session, tmp_path / "no_points", skip=("/gpc/points",))
    err = run_cli(bag, tmp_path, capsys)
    assert "has no topic /gpc/points" in err


def test_wrong_type_is_named(session, tmp_path, capsys):
    """/ee_pose recorded as a JointState (a plausible wiring mistake)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    bag = tmp_path / "wrong_type"
    good = write_session(session, tmp_path / "src", skip=("/ee_pose",))
    contents = read_bag(good, {}, {"/camera/camera/color/image_raw": "sensor_msgs/msg/Image",
                                   "/gpc/points": "sensor_msgs/msg/PointCloud2"})
    with BagWriter(bag) as w:
        from gpc_ros.monitor.bag import typestore
        store = typestore()
        for topic, msgs in contents.messages.items():
            w.add_topic(topic, contents.types[topic])
            for t, msg in msgs:
                w.write(topic, t, store.serialize_cdr(msg, contents.types[topic]))
        w.add_topic("/ee_pose", "sensor_msgs/msg/JointState")
        w.write("/ee_pose", 1, serialize_message(JointState(name=["fr3_joint1"], position=[0.1])))
    err = run_cli(bag, tmp_path, capsys)
    assert "topic /ee_pose" in err and "sensor_msgs/msg/JointState" in err and "geometry_msgs/msg/PoseStamped" in err


def test_undecodable_message_names_the_topic(session, tmp_path, capsys):
    bag = tmp_path / "garbage_message"
    with BagWriter(bag) as w:
        w.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
        w.write("/ee_pose", 1, b"\x00\x01\x00\x00" + b"\xff" * 7)
    with pytest.raises(BagError, match=r"message 0 on topic /ee_pose .* does not decode"):
        read_bag(bag, {"/ee_pose": "geometry_msgs/msg/PoseStamped"})


def test_writer_refuses_to_overwrite_and_leaves_no_half_bag(tmp_path):
    target = tmp_path / "bag"
    w = BagWriter(target)
    w.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped")
    assert not target.exists(), "an unfinished bag must not appear at its final path"
    w.close()
    assert (target / "metadata.yaml").is_file()
    with pytest.raises(BagError, match="exists already"):
        BagWriter(target)
