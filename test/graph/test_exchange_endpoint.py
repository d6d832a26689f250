"""The exchange endpoint (gpc_ros/nodes/exchange.py): two endpoints in one process on this test's own domain, one
answering requests like a host, the other collecting replies like the composer, in both dispatch modes."""

from __future__ import annotations

import threading

import pytest

from gpc_ros.testing.spin import wait_until


@pytest.mark.parametrize("dispatch", ["waitset", "executor"])
def test_an_endpoint_answers_every_request_in_order_survives_a_failing_callback_and_stops(dispatch,
                                                                                          rclpy_context) -> None:
    from std_msgs.msg import Float64MultiArray

    from gpc_ros.nodes.exchange import ExchangeEndpoint
    from gpc_ros.nodes.policy_host_node import EXCHANGE_QOS

    host = ExchangeEndpoint("test_host_exchange", rclpy_context, dispatch)
    composer = ExchangeEndpoint("test_composer_exchange", rclpy_context, dispatch)
    try:
        reply_pub = host.create_publisher(Float64MultiArray, "/test/reply", EXCHANGE_QOS)

        def answer(msg) -> None:
            if msg.data[0] == 3.0:
                raise RuntimeError("a request the host cannot answer")
            reply_pub.publish(Float64MultiArray(data=[msg.data[0], 2.0 * msg.data[0]]))

        host.create_subscription(Float64MultiArray, "/test/request", answer, EXCHANGE_QOS)
        replies: list[tuple[float, float]] = []
        threads: set[str] = set()
        arrived = threading.Condition()

        def on_reply(msg) -> None:
            with arrived:
                replies.append((msg.data[0], msg.data[1]))
                threads.add(threading.current_thread().name)
                arrived.notify_all()

        # subscribed after the dispatch thread started: the wait set is rebuilt to include it
        composer.create_subscription(Float64MultiArray, "/test/reply", on_reply, EXCHANGE_QOS)
        request_pub = composer.create_publisher(Float64MultiArray, "/test/request", EXCHANGE_QOS)
        wait_until(lambda: request_pub.get_subscription_count() >= 1 and reply_pub.get_subscription_count() >= 1,
                   60.0, "the endpoints to discover each other")
        for i in range(12):
            request_pub.publish(Float64MultiArray(data=[float(i)]))
            if i == 3:
                continue  # its callback raises; the next requests must still be answered
            with arrived:
                assert arrived.wait_for(lambda i=i: replies and replies[-1][0] == i, timeout=60.0), \
                    f"no reply to request {i} within 60 s ({dispatch})"
        assert replies == [(float(i), 2.0 * i) for i in range(12) if i != 3]
        assert threads == {"test_composer_exchange-dispatch"}  # replies handled by the endpoint's own thread
    finally:
        host.close()
        composer.close()
    assert not host._thread.is_alive() and not composer._thread.is_alive(), "close() left a dispatch thread running"


def test_an_unknown_dispatch_mode_is_refused_naming_it(rclpy_context) -> None:
    from gpc_ros.nodes.exchange import ExchangeEndpoint

    with pytest.raises(ValueError, match="dispatch must be one of .*'waitset'.*got 'fast'"):
        ExchangeEndpoint("test_bad_exchange", rclpy_context, "fast")
