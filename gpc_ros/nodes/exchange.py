"""The exchange endpoint: a minimal node for the per-step request / reply topics, dispatched by its own thread.

Both ends of the per-step exchange (docs/protocol.md) put their request and reply publishers and subscriptions on an
:class:`ExchangeEndpoint` instead of their main node: a node with nothing else (no parameter or type-description
services, no rosout, no timers, no sensor subscriptions) whose subscriptions are dispatched by one thread of its own.
A message is then handled by the thread that waited for it, over a wait set of its few subscriptions, instead of by
the main node's ``MultiThreadedExecutor``, which rebuilds its wait set over every timer, service and subscription of
the node and hands the callback to a pool thread (one more thread wake-up per message, i.e. one more time slice to
wait for on a loaded machine). Same topics, types and QoS as before. Dispatch modes (measured side by side in
docs/graph.md, "Benchmark"):

* ``waitset`` (the default): a loop over an rcl wait set of the endpoint's subscriptions and one stop guard
  condition; every ready subscription is drained (``take_message``) and its callback called in that thread (the
  pattern of ``rclpy.wait_for_message``, without an executor's task machinery);
* ``executor``: the endpoint node spun by a ``SingleThreadedExecutor`` in that thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

logger = logging.getLogger(__name__)

DISPATCH_MODES = ("waitset", "executor")


class ExchangeEndpoint:
    """A minimal node ``<name>`` and the thread that dispatches its subscriptions (``close()`` stops both).

    Args:
        name: The node's name (not remapped: global ``--ros-args`` such as ``-r __node:=...`` apply to the main node
            only, so the endpoint keeps its own name).
        context: The rclpy context of the main node.
        dispatch: ``waitset`` | ``executor`` (see the module docstring).
    """

    def __init__(self, name: str, context: Context | None = None, dispatch: str = "waitset") -> None:
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"ExchangeEndpoint dispatch must be one of {DISPATCH_MODES}; got {dispatch!r}")
        self.node = Node(name, context=context, use_global_arguments=False, enable_rosout=False,
                         start_parameter_services=False,
                         parameter_overrides=[Parameter("start_type_description_service", value=False)])
        self.dispatch = dispatch
        self._subscriptions: list[tuple[Any, Callable[[Any], None]]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._wake = self.node.create_guard_condition(lambda: None)  # triggered by subscribe() and close()
        self._executor = None
        if dispatch == "executor":
            self._executor = SingleThreadedExecutor(context=self.node.context)
            self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._run, name=f"{name}-dispatch", daemon=True)
        self._thread.start()

    def create_publisher(self, msg_type, topic: str, qos: QoSProfile):
        """A publisher on the endpoint node (publishing needs no dispatch: it goes out from the calling thread)."""
        return self.node.create_publisher(msg_type, topic, qos)

    def create_subscription(self, msg_type, topic: str, callback: Callable[[Any], None], qos: QoSProfile,
                            callback_group=None):
        """A subscription whose ``callback(msg)`` runs in the endpoint's dispatch thread, one message at a time.

        ``callback_group`` is accepted for the ``Node.create_subscription`` signature; one thread dispatches all.
        """
        def guarded(msg) -> None:  # a failing callback must not stop the dispatch of the following messages
            try:
                callback(msg)
            except Exception:
                logger.exception("exchange endpoint %s: callback on %s failed", self.node.get_name(), topic)

        subscription = self.node.create_subscription(msg_type, topic, guarded, qos, callback_group=callback_group)
        with self._lock:
            self._subscriptions.append((subscription, guarded))
        self._wake.trigger()
        return subscription

    # ---------------------------------------------------------------------------------------------------- dispatch
    def _run(self) -> None:
        try:
            if self._executor is not None:
                self._executor.spin()
            else:
                self._wait_loop()
        except ExternalShutdownException:  # rclpy shut down under us: nothing left to dispatch
            pass
        except Exception:  # an rcl error while waiting; expected only while shutting down
            if not self._stopping and self.node.context.ok():
                logger.exception("exchange endpoint %s stopped dispatching", self.node.get_name())

    def _wait_loop(self) -> None:
        context = self.node.context
        while not self._stopping and context.ok():
            with self._lock:
                subscriptions = list(self._subscriptions)
            with ExitStack() as alive:  # keep the handles valid while rcl waits on them
                alive.enter_context(self._wake.handle)
                for subscription, _ in subscriptions:
                    alive.enter_context(subscription.handle)
                wait_set = _rclpy.WaitSet(len(subscriptions), 1, 0, 0, 0, 0, context.handle)
                wait_set.clear_entities()
                wait_set.add_guard_condition(self._wake.handle)
                for subscription, _ in subscriptions:
                    wait_set.add_subscription(subscription.handle)
                while not self._stopping and context.ok():
                    wait_set.wait(500_000_000)  # bounded, so a missed stop is noticed within 0.5 s
                    if self._wake.handle.pointer in wait_set.get_ready_entities("guard_condition"):
                        break  # a new subscription or close(): rebuild the wait set
                    ready = wait_set.get_ready_entities("subscription")
                    for subscription, callback in subscriptions:
                        if subscription.handle.pointer in ready:
                            self._drain(subscription, callback)
                    wait_set.clear_entities()
                    wait_set.add_guard_condition(self._wake.handle)
                    for subscription, _ in subscriptions:
                        wait_set.add_subscription(subscription.handle)

    def _drain(self, subscription, callback: Callable[[Any], None]) -> None:
        while True:
            taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
            if taken is None:
                return
            callback(taken[0])

    def close(self) -> None:
        """Stop the dispatch thread (bounded) and destroy the node."""
        self._stopping = True
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=5.0)
        else:
            self._wake.trigger()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
