"""`gpc-ros record` as a real process on an isolated domain: what is published comes back from the bag message for
message (same bytes, same order), with the Jazzy type hashes the publishers advertise; compressed images decode
to the published pixels (png) or close to them (jpeg)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from gpc_ros.monitor.bag import read_bag

RECORD_TIMEOUT_S = 60.0


def wait_for(predicate, timeout_s: float, what: str, spin=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        if spin is not None:
            spin()
        else:
            time.sleep(0.05)


class OutputReader:
    """Collects a child's merged output without blocking (a thread reads it)."""

    def __init__(self, proc) -> None:
        import threading
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip())

    def recorded(self) -> int:
        counts = [int(m.group(1)) for line in self.lines if (m := re.search(r"recorded (\d+) messages", line))]
        return counts[-1] if counts else 0

    def text(self) -> str:
        return "\n".join(self.lines)


def smooth_image(rng) -> np.ndarray:
    """A (24, 32, 3) colour gradient at a random phase (what a camera sees; jpeg keeps it within a few levels)."""
    y, x = np.mgrid[0:24, 0:32]
    phase = rng.uniform(0, 2 * np.pi, 3)
    return np.stack([127 + 100 * np.sin(0.2 * x + 0.1 * y + p) for p in phase], axis=-1).astype(np.uint8)


def messages():
    """A few real messages per topic, built with the package's conversions."""
    from gpc_ros.control.chunk import ActionChunk
    from gpc_ros.nodes import conversions as cv

    rng = np.random.default_rng(0)
    out = {"/camera/camera/color/image_raw": [], "/ee_pose": [], "/gpc/action_chunk": [], "/gpc/points": [],
           "/gpc/parents/rgb/chunk": []}
    for i in range(5):
        stamp = cv.seconds_to_stamp(100.0 + 0.1 * i)
        out["/camera/camera/color/image_raw"].append(
            cv.rgb_to_image_msg(smooth_image(rng), stamp, "camera_color_optical_frame"))
        snap = type("S", (), {"ee_position_m": rng.uniform(0.3, 0.6, 3),
                              "ee_quaternion_xyzw": np.array([1.0, 0, 0, 0])})
        out["/ee_pose"].append(cv.pose_stamped_from_snapshot(snap, stamp))
        chunk = ActionChunk.from_arrays(100.0 + 0.1 * i, 0.1, positions_m=rng.uniform(0.3, 0.6, (8, 3)),
                                        quaternions_xyzw=np.tile([1.0, 0, 0, 0], (8, 1)))
        out["/gpc/action_chunk"].append(cv.multi_dof_trajectory_from_chunk(chunk))
        out["/gpc/parents/rgb/chunk"].append(cv.multi_dof_trajectory_from_chunk(chunk))
        out["/gpc/points"].append(cv.pointcloud2_msg(rng.uniform(0, 1, (50, 3)), stamp, "fr3_link0"))
    return out


def record(ros_domain, listener, tmp_path: Path, extra_args: list[str]) -> tuple[Path, dict, dict]:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message

    node, executor = listener
    bag = tmp_path / "bag"
    proc = ros_domain.spawn_python("-m", "gpc_ros.nodes.recorder_node", "-o", str(bag), "--discovery-period-s",
                                   "0.2", "--status-period-s", "0.2", *extra_args)
    out = OutputReader(proc)
    sent = messages()
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {topic: node.create_publisher(type(msgs[0]), topic, qos) for topic, msgs in sent.items()}
    wait_for(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), RECORD_TIMEOUT_S,
             f"the recorder to subscribe to {sorted(pubs)} (output: {out.text()})",
             spin=lambda: executor.spin_once(timeout_sec=0.05))
    hashes = {}
    for t in pubs:
        h = node.get_publishers_info_by_topic(t)[0].topic_type_hash
        hashes[t] = f"RIHS{h.version:02d}_{bytes(h.value).hex()}"
    for i in range(5):
        for topic, msgs in sent.items():
            pubs[topic].publish(msgs[i])
    total = sum(len(m) for m in sent.values())
    wait_for(lambda: out.recorded() >= total, RECORD_TIMEOUT_S, f"{total} recorded messages ({out.text()})")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=RECORD_TIMEOUT_S)
    assert proc.returncode == 0, out.text()
    return bag, sent, hashes, serialize_message


def test_recorder_round_trip_message_for_message(ros_domain, listener, tmp_path):
    bag, sent, hashes, _ = record(ros_domain, listener, tmp_path, [])
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        got: dict[str, list[bytes]] = {}
        for conn, _, raw in reader.messages():
            got.setdefault(conn.topic, []).append(bytes(raw))
        digests = {c.topic: c.digest for c in reader.connections}
    assert sorted(got) == sorted(sent)
    for topic, msgs in sent.items():
        # CDR alignment padding bytes are not initialised by the serialiser: compare decoded messages (every field)
        assert [deserialize_message(g, type(msgs[0])) for g in got[topic]] == msgs, topic
        assert digests[topic] == hashes[topic], f"{topic}: bag hash differs from the live publisher's"
    meta = (bag / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "version: 9" in meta

    # what the recorder wrote replays to a report: one chunk per recorded composed chunk, compared with them
    from gpc_ros.monitor.replay_cli import main as replay_main

    from .recorded import CHECKPOINTS

    out = tmp_path / "report"
    # (these chunks are stamped like the frames they follow: no composer delay between observation and chunk)
    assert replay_main([str(bag), "--parent", f"rgb={CHECKPOINTS / 'diffusion_rgb'}", "--steps", "2",
                        "--first-action-delay-s", "0", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["chunks"] == len(sent["/gpc/action_chunk"]) and report["error_source"] == "recorded_chunks"
    assert len(report["results"][0]["per_chunk"]["error_m"]) == report["chunks"]


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_recorder_compresses_colour_images(ros_domain, listener, tmp_path, fmt):
    from gpc_ros.nodes.conversions import compressed_image_to_rgb, image_msg_to_rgb

    bag, sent, _, _ = record(ros_domain, listener, tmp_path, ["--compress-images", fmt])
    topic = "/camera/camera/color/image_raw/compressed"
    contents = read_bag(bag, {topic: "sensor_msgs/msg/CompressedImage"})
    assert "/camera/camera/color/image_raw" not in contents.types
    images = [image_msg_to_rgb(m) for m in sent["/camera/camera/color/image_raw"]]
    decoded = [compressed_image_to_rgb(m) for _, m in contents.messages[topic]]
    assert len(decoded) == len(images)
    for a, b in zip(images, decoded):
        error = np.abs(a.astype(int) - b.astype(int)).mean()
        assert error == 0 if fmt == "png" else 0 < error < 4
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in contents.messages[topic]]
    assert stamps == [(s.header.stamp.sec, s.header.stamp.nanosec) for s in sent["/camera/camera/color/image_raw"]]


def test_jazzy_type_hashes_match_the_installed_interfaces(tmp_path):
    """Every profile type's RIHS01 hash in our bags equals the one in the Jazzy interface description files
    (tf2_msgs, only in the ``full`` profile, is not among the installed wheels: checked when present)."""
    import sensor_msgs

    from gpc_ros.monitor.bag import DEFAULT_PROFILE, FULL_PROFILE, BagWriter

    share = Path(sensor_msgs.__file__).parents[4] / "share"
    if not share.is_dir():
        share = Path(sensor_msgs.__file__).parents[5] / "share"
    with BagWriter(tmp_path / "types") as w:
        for i, spec in enumerate({s.msgtype for s in FULL_PROFILE}):
            w.add_topic(f"/t{i}", spec)
    from rosbags.highlevel import AnyReader
    with AnyReader([tmp_path / "types"]) as reader:
        checked = set()
        for conn in reader.connections:
            pkg, _, name = conn.msgtype.split("/")
            description = share / pkg / "msg" / f"{name}.json"
            if not description.is_file():
                continue
            desc = json.loads(description.read_text())
            want = next(h["hash_string"] for h in desc["type_hashes"] if h["type_name"] == conn.msgtype)
            assert conn.digest == want, conn.msgtype
            checked.add(conn.msgtype)
    assert {s.msgtype for s in DEFAULT_PROFILE} <= checked
