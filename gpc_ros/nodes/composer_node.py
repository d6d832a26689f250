"""composer_node: fuses the policy hosts' predictions at every denoising step into action chunks (GPC).

Every ``replan_period_s`` it names one observation time, has every host encode for it, samples a chunk with
:class:`gpc_ros.graph.composition.GraphComposer` (the exchange: docs/protocol.md) and publishes it on
``/gpc/action_chunk`` (trajectory_msgs/MultiDOFJointTrajectory, the driver's convention, docs/messages.md) plus each
parent's own chunk on ``/gpc/parents/<name>/chunk``. Weights, operator, sampler and the fault policy are
parameters validated on set (the next chunk uses them). The driver's running plan (``/gpc/driver_plan``) triggers a
chunk at once when less than ``min_plan_remaining_s`` of it is left, and with ``warm_start_from_plan`` each chunk
starts from it (partial denoising, docs/graph.md). With ``search_state_path`` set, episode outcomes on
``/gpc/episode_outcome`` (std_msgs/Bool, true = success) drive an online weight search whose state persists there.
``deployment: in_process`` runs the host nodes inside this process (one executor, no serialisation). Health on
/diagnostics (``composer_node: composition``).
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from gpc_ros.action_space import ACTION_DIM, actions_to_chunk
from gpc_ros.compose.errors import CompositionError, IncompatibleParentError
from gpc_ros.control.chunk import ActionChunk
from gpc_ros.graph.composition import (
    ChunkResult,
    ComposerNodeConfig,
    EpisodeSearch,
    GraphComposer,
    LocalHost,
    RemoteHost,
)
from gpc_ros.nodes import conversions
from gpc_ros.nodes.exchange import ExchangeEndpoint
from gpc_ros.nodes.parameters import ConfigParameters, flat_fields
from gpc_ros.nodes.policy_host_node import (
    ANNOUNCE_QOS,
    EXCHANGE_QOS,
    PolicyHostNode,
    host_topics,
)
from gpc_ros.nodes.spin import spin_node

#: Parameters that may change while the node runs (the others need a restart).
DYNAMIC = {"weights", "seed", "on_fault", "fallback_parent", "max_observation_age_s", "max_observation_skew_s",
           "encode_timeout_s", "step_timeout_s", "publish_parent_chunks", "tcp_quat_xyzw", "warm_start_from_plan",
           "min_plan_remaining_s"} | {
    f.name for f in flat_fields(ComposerNodeConfig) if f.name.startswith("composer.")}

#: On shutdown, wait at most this long for the chunk being composed before closing the composer core (s).
CLOSE_WAIT_S = 5.0

#: Descriptions of the few core fields whose docstring is missing (the rest come from the dataclasses).
DESCRIPTIONS = {
    "composer.sampler.num_train_timesteps": "length of the VP training schedule of the composer's grid (ddpm/ddim)",
    "composer.sampler.beta_schedule": "diffusers beta schedule of the composer's grid (ddpm/ddim)",
}


class ComposerNode(Node):
    """See the module docstring."""

    def __init__(self, exchange_dispatch: str = "waitset", **kwargs) -> None:
        """Build the node.

        ``exchange_dispatch``: the hosts' request / reply topics on their own minimal node and thread
        (:class:`~gpc_ros.nodes.exchange.ExchangeEndpoint`, dispatched by ``waitset`` or ``executor``); ``node`` = on
        this node, dispatched by its executor (the set-up before; the bench compares them).
        """
        super().__init__("composer", **kwargs)
        self.fatal: str | None = None
        self.params = ConfigParameters(self, ComposerNodeConfig, dynamic=DYNAMIC, descriptions=DESCRIPTIONS,
                                       dynamic_typing={"composer.sampler.clip_sample"},  # true | false | auto
                                       on_change=self.on_config)
        config: ComposerNodeConfig = self.params.config
        self.hosts: list[PolicyHostNode] = []
        self.exchange: ExchangeEndpoint | None = None
        replies = ReentrantCallbackGroup()
        if config.deployment == "in_process":
            # a global `-r __node:=composer` would rename the hosts too: they take only the parameter files
            files = [a for flag, a in zip(sys.argv, sys.argv[1:]) if flag == "--params-file"]
            cli = ["--ros-args", *[x for f in files for x in ("--params-file", f)]]
            self.hosts = [PolicyHostNode(f"{name}_host", use_global_arguments=False, cli_args=cli, own_process=False)
                          for name in config.parents]
            for name, host in zip(config.parents, self.hosts):
                if host.core.name != name:
                    raise ValueError(f"in-process host node {name}_host serves parent {host.core.name!r}; its "
                                     f"'name' parameter must be {name!r}")
            handles = [LocalHost(h.core) for h in self.hosts]
        else:
            handles = []
            if exchange_dispatch != "node":
                self.exchange = ExchangeEndpoint(f"{self.get_name()}_exchange", self.context, exchange_dispatch)
            exchange_node = self.exchange if self.exchange is not None else self
            for name in config.parents:
                topics = host_topics(name)
                pub = exchange_node.create_publisher(Float64MultiArray, topics["request"], EXCHANGE_QOS)
                handle = RemoteHost(name, lambda exchange, pub=pub: pub.publish(conversions.exchange_to_msg(exchange)))
                exchange_node.create_subscription(Float64MultiArray, topics["reply"],
                                                  lambda msg, h=handle: self.on_reply(h, msg), EXCHANGE_QOS,
                                                  callback_group=replies)
                self.create_subscription(String, topics["announce"], lambda msg, h=handle: self.on_announce(h, msg),
                                         ANNOUNCE_QOS, callback_group=replies)
                handles.append(handle)
        self.core = GraphComposer(config, handles)
        self._compose_lock = threading.Lock()
        self._check_compatible()
        self.quat_xyzw = np.asarray(config.tcp_quat_xyzw, dtype=np.float64)
        self.last: ChunkResult | None = None
        self.latency_s = float("nan")
        self.search: EpisodeSearch | None = None
        if config.search_state_path:
            self.search = EpisodeSearch(config.search_state_path, config.parents, config.search_strategy,
                                        config.search_divisions, max(config.seed, 0))
            self._set_weights(self.search.weights)
            self.create_subscription(Bool, "/gpc/episode_outcome", self.on_outcome, 10, callback_group=replies)
        self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, "/gpc/action_chunk", 10)
        self.parent_pubs = {n: self.create_publisher(MultiDOFJointTrajectory, f"/gpc/parents/{n}/chunk", 10)
                            for n in config.parents}
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PoseStamped, "ee_pose", self.on_pose, 10, callback_group=replies)
        self.create_timer(1.0, self.publish_diagnostics, callback_group=replies)
        composing = MutuallyExclusiveCallbackGroup()  # periodic and short-plan chunks never overlap
        self.replan_timer = self.create_timer(config.replan_period_s, self.on_replan, callback_group=composing)
        # one-shot, re-armed on every plan message for the moment the plan runs short
        self.short_plan_timer = self.create_timer(1.0, self.on_short_plan, callback_group=composing)
        self.short_plan_timer.cancel()
        self.plan = None  # the driver's running plan (RunningPlan) or None
        self.plan_messages = 0
        self.short_plan_replans = 0
        self.create_subscription(MultiDOFJointTrajectory, conversions.DRIVER_PLAN_TOPIC, self.on_plan,
                                 conversions.driver_plan_qos(), callback_group=replies)
        self.get_logger().info(f"composing {list(config.parents)} with weights {list(config.weights)} "
                               f"({config.deployment}, {config.composer.sampler.kind} "
                               f"{config.composer.sampler.num_inference_steps} steps)")

    # -- hosts ------------------------------------------------------------------------------------------------------
    def on_reply(self, handle: RemoteHost, msg: Float64MultiArray) -> None:
        """A reply from host ``handle`` on its exchange topic: hand it to the waiting call.

        Malformed replies are logged (throttled) and dropped.
        """
        try:
            handle.deliver(conversions.exchange_from_msg(msg))
        except ValueError as exc:
            self.get_logger().warning(f"ignored a malformed reply from {handle.name}: {exc}",
                                      throttle_duration_sec=1.0)

    def on_announce(self, handle: RemoteHost, msg: String) -> None:
        """A host's announcement: record it and check the announced parents can be composed (fatal if not)."""
        announced = json.loads(msg.data)
        if announced.get("name") != handle.name:
            self.get_logger().error(f"host on /gpc/hosts/{handle.name}/ announces parent {announced.get('name')!r}")
            return
        handle.announce(announced)
        self.get_logger().info(f"host {handle.name!r} announced ({announced['parameterization']}, "
                               f"H={announced['action_horizon']}, D={announced['action_dim']})")
        self._check_compatible()

    def _check_compatible(self) -> None:
        try:
            self.core.check_compatible()
        except IncompatibleParentError as exc:
            self.fatal = f"incompatible policy hosts: {exc}"
            self.get_logger().fatal(self.fatal)
            self._publish_status("ERROR", self.fatal)
            self.context.try_shutdown()

    def on_outcome(self, msg: Bool) -> None:
        """An episode ended (true = success): record it for the running weights, save, use the next arm."""
        previous = list(self.core.config.weights)
        weights = self.search.outcome(bool(msg.data))
        self._set_weights(weights)
        self.get_logger().info(f"episode with weights {previous}: {'success' if msg.data else 'failure'}; "
                               f"next weights {list(weights)} (state in {self.search.path})")

    def _set_weights(self, weights) -> None:
        result = self.set_parameters([Parameter("weights", value=[float(w) for w in weights])])[0]
        if not result.successful:
            self.get_logger().error(f"weight search picked weights the composer refuses: {result.reason}")

    def on_pose(self, msg: PoseStamped) -> None:
        """The TCP pose (``ee_pose``): its orientation is used for every pose of the published chunks."""
        q = msg.pose.orientation
        self.quat_xyzw = np.array([q.x, q.y, q.z, q.w])

    def on_config(self, config: ComposerNodeConfig) -> None:
        """New validated parameters: the composer core takes them from the next chunk on."""
        with self._compose_lock:
            self.core.reconfigure(config)
        self.get_logger().info(f"new parameters: weights {list(config.weights)}, operator "
                               f"{config.composer.operator}, on_fault {config.on_fault}")

    # -- the driver's running plan ---------------------------------------------------------------------------------
    def on_plan(self, msg: MultiDOFJointTrajectory) -> None:
        """The driver's running plan changed: keep it (warm start) and arm the short-plan timer.

        The timer fires when less than ``min_plan_remaining_s`` of the plan is left (at once for no plan); a new
        plan re-arms it, so each plan triggers at most one extra chunk.
        """
        try:
            plan = conversions.running_plan_from_msg(msg)
        except ValueError as exc:  # ChunkRejectedError is a ValueError
            self.get_logger().warning(f"ignored a malformed driver plan: {exc}", throttle_duration_sec=2.0)
            return
        self.plan = plan
        self.plan_messages += 1
        threshold = self.core.config.min_plan_remaining_s
        if threshold <= 0.0:
            self.short_plan_timer.cancel()
            return
        remaining = plan.remaining_s(self._now_s()) if plan is not None else -1.0
        self.short_plan_timer.timer_period_ns = max(int((remaining - threshold) * 1e9), 1_000_000)
        self.short_plan_timer.reset()

    def on_short_plan(self) -> None:
        """One-shot: the driver's plan runs short; compose now and restart the replan period."""
        self.short_plan_timer.cancel()
        if self.core.config.min_plan_remaining_s <= 0.0:
            return
        self.short_plan_replans += 1
        self.replan_timer.reset()
        self.on_replan()

    # -- chunks -----------------------------------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_replan(self) -> None:
        """Timer callback: compose one chunk and publish it (and each parent's, if enabled) as a trajectory."""
        if self.fatal:
            return
        with self._compose_lock:
            config = self.core.config
            try:
                result = self.core.compose(self._now_s(), self.plan)
            except CompositionError as exc:  # e.g. weights the operator refuses after a host went down
                self.last = ChunkResult(0, mode="refused", reason=f"composition failed: {exc}")
                self.get_logger().error(self.last.reason, throttle_duration_sec=2.0)
                self.publish_diagnostics()
                return
        self.last = result
        if result.actions is None:
            self.get_logger().warning(f"no chunk: {result.reason}", throttle_duration_sec=2.0)
            self.publish_diagnostics()
            return
        if result.faults:
            self.get_logger().warning(result.reason, throttle_duration_sec=2.0)
        start_s = result.start_s
        self.latency_s = self._now_s() - result.stamp_s  # observation stamp -> chunk out
        self.chunk_pub.publish(self._trajectory(result.actions, start_s, config.dt_s))
        if config.publish_parent_chunks:
            for name, actions in result.parent_actions.items():
                self.parent_pubs[name].publish(self._trajectory(actions, start_s, config.dt_s))
        if result.faults:
            self.publish_diagnostics()

    def _trajectory(self, actions, start_s: float, dt_s: float) -> MultiDOFJointTrajectory:
        a = actions.detach().to(dtype=actions.dtype).cpu().numpy().astype(np.float64)
        if a.shape[1] == ACTION_DIM:  # the action layout of gpc_ros.action_space: the pose and width it says
            chunk = actions_to_chunk(a, start_s - dt_s, dt_s)  # (its step i is due at t_obs + (i + 1) dt)
        else:  # position (m), optionally the gripper width (m); orientation: the measured one
            width = a[:, 3] if a.shape[1] >= 4 else None
            chunk = ActionChunk.from_arrays(start_s, dt_s, positions_m=a[:, :3],
                                            quaternions_xyzw=np.tile(self.quat_xyzw, (a.shape[0], 1)),
                                            gripper_width_m=width)
        return conversions.multi_dof_trajectory_from_chunk(chunk)

    # -- health -----------------------------------------------------------------------------------------------------
    def _publish_status(self, level: str, message: str, values: dict | None = None) -> None:
        self.diagnostics_pub.publish(conversions.diagnostic_array(
            "composer_node: composition", level, message, ",".join(self.core.config.parents), values or {},
            self.get_clock().now().to_msg()))

    def publish_diagnostics(self) -> None:
        """Publish the composer's health: counters, weights, each host's state and the last chunk."""
        if self.fatal:
            self._publish_status("ERROR", self.fatal)
            return
        last = self.last
        values: dict[str, object] = dict(self.core.counters)
        values["weights"] = list(self.core.config.weights)
        for name, handle in self.core.handles.items():
            values[f"host.{name}"] = ("not announced" if handle.announced is None
                                      else "up" if handle.up else f"down: {handle.down_reason}")
        plan = self.plan
        values["plan_remaining_s"] = "none" if plan is None else f"{plan.remaining_s(self._now_s()):.3f}"
        values["short_plan_replans"] = self.short_plan_replans
        if last is None:
            self._publish_status("WARN", "no chunk attempted yet", values)
            return
        values.update({"mode": last.mode, "seed": last.seed, "correlation_id": last.correlation_id,
                       "observation_stamp_s": f"{last.stamp_s:.6f}",
                       "used_weights": json.dumps(last.weights),
                       "observation_to_chunk_s": f"{self.latency_s:.4f}",
                       "warm_start": last.warm_start})
        level = "OK" if last.mode == "normal" else "WARN"
        message = last.reason or f"composing ({last.mode})"
        self._publish_status(level, message, values)

    def destroy_node(self) -> None:
        """Close the composer core (after the chunk being composed, if any), the host-facing nodes, this node."""
        locked = self._compose_lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self.core.close()  # stops the joint step's worker processes (composer.joint_step_workers)
        finally:
            if locked:
                self._compose_lock.release()
        if self.exchange is not None:
            self.exchange.close()
        for host in self.hosts:
            host.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the composer node (``python -m gpc_ros.nodes.composer_node``) until shutdown."""
    spin_node(ComposerNode, args, threads=4, extra_nodes=lambda node: node.hosts, fast_exit=True)


if __name__ == "__main__":
    main()
