"""The one ``main()`` body every gpc_ros node shares (the Jazzy-era pattern of ros2/examples)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1,
              extra_nodes: Callable[[Node], list[Node]] | None = None, fast_exit: bool = False) -> None:
    """``rclpy.init`` -> build the node -> spin until Ctrl-C or shutdown -> destroy it, always.

    ``threads > 1`` spins a ``MultiThreadedExecutor`` (nodes whose callback groups must not wait for each other).
    ``extra_nodes(node)``: more nodes the first one made (e.g. in-process policy hosts), spun by the same executor.
    ``fast_exit``: leave with ``os._exit`` once the node is destroyed and rclpy shut down (skips the interpreter's
    final garbage collection of torch's objects, which took seconds under load and delayed Ctrl-C of the graph).
    A node that sets ``fatal`` (a one-sentence reason) before shutting down makes the process exit with status 2.
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        if threads > 1 or extra_nodes is not None:
            executor = MultiThreadedExecutor(num_threads=max(threads, 2))
            for each in [node, *(extra_nodes(node) if extra_nodes is not None else [])]:
                executor.add_node(each)
            executor.spin()
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:  # the context shut down (Ctrl-C) while a wait set was built: a normal stop
        if rclpy.ok():
            raise
    finally:
        fatal = getattr(node, "fatal", None)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if fast_exit:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2 if fatal else 0)
    if fatal:
        raise SystemExit(2)
