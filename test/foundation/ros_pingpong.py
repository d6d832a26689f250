"""Child process for test_ros_smoke: ``ping`` publishes on /gpc_test/ping until it hears /gpc_test/pong;
``pong`` answers every ping. Exit 0 = a round trip happened across two processes."""

import sys
import time

import rclpy
from rclpy.node import Node
from std_msgs.msg import String


def main(role: str, timeout_s: float = 30.0) -> int:
    rclpy.init()
    node = Node(f"gpc_test_{role}")
    done: list[str] = []
    if role == "pong":
        pub = node.create_publisher(String, "/gpc_test/pong", 10)
        node.create_subscription(String, "/gpc_test/ping", lambda m: pub.publish(String(data="pong:" + m.data)), 10)
    else:
        pub = node.create_publisher(String, "/gpc_test/ping", 10)
        node.create_subscription(String, "/gpc_test/pong", lambda m: done.append(m.data), 10)
        node.create_timer(0.05, lambda: pub.publish(String(data="hello")))
    deadline = time.monotonic() + timeout_s
    while rclpy.ok() and not done and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(f"{role} got: {done[:1]}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if (done or role == "pong") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
