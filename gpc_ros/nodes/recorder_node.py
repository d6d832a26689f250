"""``gpc-ros record``: record the graph's topics (a documented profile) into a rosbag2 bag with rosbags.

Raw subscriptions (no deserialisation) write each message's CDR bytes with its receive time; topics are
discovered every ``--discovery-period-s`` so publishers that start later are recorded too. QoS follows the
publishers (reliable when all are, transient-local for latched topics such as ``/tf_static``), as ``ros2 bag``
does. With ``--compress-images`` the colour images are stored as ``sensor_msgs/CompressedImage`` on
``<topic>/compressed`` (image_transport's naming). Stop with Ctrl-C or ``--duration``; the bag appears at its
path only when complete. Topic profile and commands: docs/monitoring.md.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from gpc_ros.monitor.bag import (
    COMPRESSED_IMAGE,
    IMAGE,
    PROFILES,
    STORAGES,
    BagError,
    BagWriter,
    TopicSpec,
    profile_spec,
    ros_type_to_bag_type,
)

COLOR_IMAGE = TopicSpec("/camera/*/color/image_raw", IMAGE, "")


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, _, name = ros_type_to_bag_type(msgtype).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def build_parser() -> argparse.ArgumentParser:
    """The ``gpc-ros record`` argument parser."""
    p = argparse.ArgumentParser(prog="gpc-ros record", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="bag directory to create (default: gpc_<date>_<time>)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="default",
                   help="topic profile (docs/monitoring.md): default = replay inputs + chunks + health; "
                        "full adds depth, markers, tf")
    p.add_argument("--topic", dest="topics", action="append", default=[], metavar="TOPIC",
                   help="record this topic too (any type; repeat)")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="mcap (default; ros2 bag, Foxglove) or sqlite3")
    p.add_argument("--compress-images", nargs="?", const="jpeg", choices=("jpeg", "png"), default=None,
                   help="store colour images as sensor_msgs/CompressedImage on <topic>/compressed (jpeg default)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--discovery-period-s", type=float, default=0.5, help="look for new topics this often (s)")
    p.add_argument("--status-period-s", type=float, default=1.0,
                   help="log the number of messages written this often, when it changed (s)")
    return p


class Recorder:
    """Subscribes to the profile's topics as they appear and writes every message to a :class:`BagWriter`."""

    def __init__(self, node, writer: BagWriter, profile: tuple[TopicSpec, ...], extra_topics: list[str],
                 compress: str | None) -> None:
        self.node, self.writer, self.profile = node, writer, profile
        self.extra = set(extra_topics)
        self.compress = compress
        self.subscriptions: dict[str, object] = {}
        self.skipped: set[tuple[str, str]] = set()
        self._reported = -1

    def report(self) -> None:
        """Log the messages written so far (when the count changed)."""
        total = sum(self.writer.counts.values())
        if total != self._reported:
            self._reported = total
            self.node.get_logger().info(f"recorded {total} messages on {len(self.writer.counts)} topics")

    def discover(self) -> None:
        """Subscribe to every new matching topic (called from a timer)."""
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.subscriptions or not types:
                continue
            spec = profile_spec(topic, self.profile)
            msgtype = ros_type_to_bag_type(types[0])
            if spec is None and topic not in self.extra:
                continue
            if spec is not None and msgtype != spec.msgtype and topic not in self.extra:
                if (topic, msgtype) not in self.skipped:
                    self.skipped.add((topic, msgtype))
                    self.node.get_logger().warning(f"not recording {topic}: it is {msgtype}, the profile expects "
                                                   f"{spec.msgtype}")
                continue
            self._subscribe(topic, msgtype)

    def _qos(self, topic: str):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(depth=100,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        try:
            cls = message_class(msgtype)
        except (ImportError, AttributeError, ValueError):
            self.node.get_logger().warning(f"not recording {topic}: no Python message class for {msgtype}")
            self.subscriptions[topic] = None
            return
        clock = self.node.get_clock()
        if self.compress and msgtype == IMAGE and COLOR_IMAGE.matches(topic):
            from rclpy.serialization import serialize_message

            from gpc_ros.nodes.conversions import compressed_image_msg, image_msg_to_rgb

            out_topic = topic + "/compressed"
            self.writer.add_topic(out_topic, COMPRESSED_IMAGE)

            def on_image(msg) -> None:
                packed = compressed_image_msg(image_msg_to_rgb(msg), msg.header.stamp, msg.header.frame_id,
                                              self.compress)
                self.writer.write(out_topic, clock.now().nanoseconds, serialize_message(packed))

            self.subscriptions[topic] = self.node.create_subscription(cls, topic, on_image, self._qos(topic))
        else:
            self.writer.add_topic(topic, msgtype)

            def on_raw(raw: bytes, topic: str = topic) -> None:
                self.writer.write(topic, clock.now().nanoseconds, raw)

            self.subscriptions[topic] = self.node.create_subscription(cls, topic, on_raw, self._qos(topic), raw=True)
        self.node.get_logger().info(f"recording {topic} ({msgtype})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gpc-ros record`` (also ``python -m gpc_ros.nodes.recorder_node``)."""
    args, ros_args = build_parser().parse_known_args(argv)
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node

    output = args.output or Path(datetime.now().strftime("gpc_%Y%m%d_%H%M%S"))
    try:
        writer = BagWriter(output, args.storage)
    except (BagError, OSError) as exc:
        print(f"gpc-ros record: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = Node("gpc_recorder")
    recorder = Recorder(node, writer, PROFILES[args.profile], args.topics, args.compress_images)
    node.create_timer(args.discovery_period_s, recorder.discover)
    node.create_timer(args.status_period_s, recorder.report)
    recorder.discover()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop["flag"] and rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # Ctrl-C's handler shut the context down while spin_once built its wait set ("the given context is not
        # valid"; seen once in CI): that is a normal stop. Anything else with the context still up is not.
        if rclpy.ok():
            raise
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        path = writer.close()
    total = sum(writer.counts.values())
    print(f"wrote {path}: {total} messages on {len(writer.counts)} topics "
          + ", ".join(f"{t}={n}" for t, n in sorted(writer.counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
