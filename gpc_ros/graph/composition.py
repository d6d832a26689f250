"""The composer of the graph without ROS: hosts behind handles, one observation time per chunk, faults, weights.

Per chunk (:meth:`GraphComposer.compose`):

1. name one observation time (now) and ask every announced host with a non-zero weight to encode its window
   for it (bounded by ``encode_timeout_s``; hosts marked down are asked too but not waited for, so a host that
   came back is noticed);
2. refuse the chunk (no chunk, a reason for /diagnostics) when a host has no observation, an observation older
   than ``max_observation_age_s`` or the hosts' observation stamps differ by more than ``max_observation_skew_s``;
3. run :class:`~gpc_ros.compose.composer.Composer` on proxy parents that forward each denoising step to their
   host (correlation id, step, the parent's own time, the observation stamp; every wait bounded by
   ``step_timeout_s``). Proxies of remote hosts are split-phase
   (:class:`~gpc_ros.compose.parent.SplitPhaseParent`): at each step the composer's thread sends every host's
   request, then waits for the replies, so the hosts compute at the same time without a thread per host;
4. a host that does not answer, answers with an error or with NaN is a fault: per ``on_fault`` the chunk is
   composed again from the same noise with the weights renormalised over the healthy hosts (``renormalize``),
   with the ``fallback_parent`` alone (``fallback``), or not at all (``hold``: nothing is published, so the
   driver's watchdog holds the arm). A faulted host is used again as soon as it answers again.

A handle is either :class:`LocalHost` (the host's core in this process: no serialisation) or
:class:`RemoteHost` (requests go out through a ``send`` callable, replies come back via ``deliver``); both give
the identical chunk for the same seed (the float32 tensors cross the wire exactly).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from gpc_ros.compose.composer import Composer, ComposerConfig
from gpc_ros.compose.errors import CompositionError, IncompatibleParentError, NonFinitePredictionError
from gpc_ros.compose.operators import as_weight_matrix, make_operator
from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.parent import joint_encode, joint_step, worker_step
from gpc_ros.compose.warm_start import RunningPlan, warm_start_from_plan
from gpc_ros.graph import protocol
from gpc_ros.graph.host import HostCore, normalization_from, time_convention_from

logger = logging.getLogger(__name__)

FAULT_POLICIES = ("renormalize", "fallback", "hold")
DEPLOYMENTS = ("separate", "in_process")


@dataclass(frozen=True)
class ComposerNodeConfig:
    """The composer node: which hosts, their weights, how to sample, when to refuse a chunk, what to do on faults."""

    # --- parents and weights
    parents: tuple[str, ...] = ("left", "right")
    """Host names in weight order (each runs a policy_host_node named <name>_host)."""
    weights: tuple[float, ...] = (0.5, 0.5)
    """One weight per parent (changeable at run time; the next chunk uses them; 0 = the parent is not called)."""
    deployment: Literal["separate", "in_process"] = "separate"
    """separate (each host its own process, steps over DDS) | in_process (host nodes inside this process)."""
    composer: ComposerConfig = field(default_factory=lambda: ComposerConfig(parallel_parents="auto"))
    """How to sample. ``composer.parallel_parents`` matters for in-process hosts only (separate hosts' steps are
    sent split-phase and overlap in their own processes): "auto" runs the parents' forwards in threads when that
    measures faster than one after the other (docs/graph.md)."""
    seed: int = 0
    """Chunk k (k-th published, from 0) is sampled with torch seed seed + k; -1 = a fresh random seed each chunk."""
    # --- timing
    replan_period_s: float = 0.2
    """A new chunk every this many seconds."""
    dt_s: float = 0.1
    """Time between two actions of a chunk (s)."""
    first_action_delay_s: float = 0.1
    """The first action is due this long after the observation stamp (s)."""
    min_plan_remaining_s: float = 0.3
    """Compose at once (before the period ends) when the driver's running plan has less than this left (s); 0 = off."""
    warm_start_from_plan: bool = False
    """Start each chunk from the driver's running plan noised to composer.warm_start.remaining_fraction of the grid
    (SDEdit-style partial denoising, docs/graph.md) instead of pure noise; no plan = a cold start."""
    # --- observation checks (no chunk and a diagnostic when violated)
    max_observation_age_s: float = 0.5
    """A host's newest observation may be at most this old at the chunk's observation time (s)."""
    max_observation_skew_s: float = 0.1
    """The hosts' observation stamps may differ by at most this much (s)."""
    # --- bounded waits and faults
    encode_timeout_s: float = 1.0
    """Wait at most this long for the hosts' encode replies (s)."""
    step_timeout_s: float = 0.5
    """Wait at most this long for one host's per-step reply (s); longer = the host stalled (a fault)."""
    on_fault: Literal["renormalize", "fallback", "hold"] = "renormalize"
    """renormalize (weights over the healthy hosts) | fallback (fallback_parent alone) | hold (no chunk)."""
    fallback_parent: str = ""
    """The parent used alone when on_fault is fallback."""
    # --- online weight search (episode outcomes on /gpc/episode_outcome pick the next episode's weights)
    search_state_path: str = ""
    """JSON file of the online weight search (created, resumed, written after every outcome); "" = no search."""
    search_strategy: Literal["thompson", "grid"] = "thompson"
    """thompson (Thompson sampling over the arms) | grid (least-tried arm next)."""
    search_divisions: int = 10
    """Arms: every weight vector with entries k / search_divisions summing to 1 (10 -> the paper's 11 for K = 2)."""
    # --- output
    publish_parent_chunks: bool = True
    """Also publish each parent's own chunk (same noise) on /gpc/parents/<name>/chunk."""
    tcp_quat_xyzw: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)
    """TCP orientation of the chunk's poses until ee_pose has been received (then the latest measured one)."""

    def __post_init__(self) -> None:
        names = tuple(self.parents)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"ComposerNodeConfig.parents must be unique non-empty names; got {list(names)}")
        if len(self.weights) != len(names):
            raise ValueError(f"ComposerNodeConfig.weights must have one value per parent {list(names)}; "
                             f"got {list(self.weights)}")
        if not isinstance(self.composer, ComposerConfig):
            raise TypeError(f"ComposerNodeConfig.composer must be a ComposerConfig; got {self.composer!r}")
        operator = make_operator(self.composer.operator, self.composer.allow_unnormalized_weights)
        try:
            operator.check(as_weight_matrix(list(self.weights), names), names)
        except CompositionError as exc:
            raise ValueError(f"ComposerNodeConfig.weights: {exc}") from None
        if self.deployment not in DEPLOYMENTS:
            raise ValueError(f"ComposerNodeConfig.deployment must be one of {DEPLOYMENTS}; got {self.deployment!r}")
        if self.composer.joint_step_workers and self.deployment != "in_process":
            raise ValueError(f"ComposerNodeConfig.composer.joint_step_workers=True runs the heads of hosts in the "
                             f"composer's process in worker processes, so deployment must be 'in_process'; got "
                             f"deployment={self.deployment!r} (hosts in separate processes: set "
                             f"composer.joint_step_workers false)")
        if self.on_fault not in FAULT_POLICIES:
            raise ValueError(f"ComposerNodeConfig.on_fault must be one of {FAULT_POLICIES}; got {self.on_fault!r}")
        if self.on_fault == "fallback" and self.fallback_parent not in names:
            raise ValueError(f"ComposerNodeConfig.fallback_parent must be one of {list(names)} when on_fault is "
                             f"fallback; got {self.fallback_parent!r}")
        for attr in ("replan_period_s", "dt_s", "max_observation_age_s", "max_observation_skew_s",
                     "encode_timeout_s", "step_timeout_s"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ComposerNodeConfig.{attr} must be a number > 0; got {value!r}")
        if not (isinstance(self.min_plan_remaining_s, (int, float)) and self.min_plan_remaining_s >= 0):
            raise ValueError(f"ComposerNodeConfig.min_plan_remaining_s must be a number >= 0 (0 = off); "
                             f"got {self.min_plan_remaining_s!r}")
        if not self.first_action_delay_s >= 0:
            raise ValueError(f"ComposerNodeConfig.first_action_delay_s must be >= 0; got {self.first_action_delay_s}")
        if len(self.tcp_quat_xyzw) != 4 or not 0.5 < math.sqrt(sum(v * v for v in self.tcp_quat_xyzw)) < 2.0:
            raise ValueError(f"ComposerNodeConfig.tcp_quat_xyzw must be a unit quaternion (x, y, z, w); "
                             f"got {list(self.tcp_quat_xyzw)}")
        if self.search_strategy not in ("thompson", "grid"):
            raise ValueError(f"ComposerNodeConfig.search_strategy must be 'thompson' or 'grid'; "
                             f"got {self.search_strategy!r}")
        if not (isinstance(self.search_divisions, int) and self.search_divisions >= 1):
            raise ValueError(f"ComposerNodeConfig.search_divisions must be an int >= 1; got {self.search_divisions!r}")
        if not (isinstance(self.seed, int) and self.seed >= -1):
            raise ValueError(f"ComposerNodeConfig.seed must be an int >= -1; got {self.seed!r}")


class HostFaultError(Exception):
    """A host did not answer in time, answered with an error or with NaN; ``host`` names it."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host!r}: {reason}")
        self.host, self.reason = host, reason


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: protocol.Exchange | None = None


class HostHandle:
    """What the composer knows about one host: its announcement, whether it is up, how to reach it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.announced: dict[str, Any] | None = None
        self.down_reason: str | None = None
        self.last_seen_s = -math.inf

    @property
    def up(self) -> bool:
        """True once the host has announced and has not been marked down since."""
        return self.announced is not None and self.down_reason is None

    def mark_down(self, reason: str) -> None:
        """Mark the host down (logged once per outage); it is skipped until it answers again.

        Args:
            reason: Why, e.g. the missed deadline or the error status; kept in ``down_reason``.
        """
        if self.down_reason is None:
            logger.warning("host %s is down: %s", self.name, reason)
        self.down_reason = reason

    def mark_up(self) -> None:
        """Mark the host as answering again and note the time it was last seen (monotonic s)."""
        if self.down_reason is not None:
            logger.warning("host %s answers again", self.name)
        self.down_reason = None
        self.last_seen_s = time.monotonic()

    def announce(self, announced: dict[str, Any]) -> None:
        """Record the host's announcement (docs/protocol.md) and mark it up.

        Args:
            announced: The JSON-decoded announcement: parameterization, time convention, horizon, action dim, ...
        """
        self.announced = announced
        self.mark_up()

    # transport ------------------------------------------------------------------------------------------------------
    def encode(self, correlation_id: int, time_s: float, dtype_bits: int) -> _Slot:
        """Ask the host to encode its observation window at ``time_s`` for chunk ``correlation_id``.

        Args:
            correlation_id: The chunk's id; the replies to this chunk carry it.
            time_s: The chunk's time (s, ROS clock); the host uses its frames at or before it.
            dtype_bits: 32 or 64, the float width of the chunk's tensors.

        Returns:
            A slot whose ``event`` is set once the reply (status, observation stamp) is in ``reply``.
        """
        raise NotImplementedError

    def predict(self, correlation_id: int, step: int, parent_time: float, stamp: tuple[int, int],
                x_t: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """One denoising step: the host's parent prediction for ``x_t`` at ``parent_time``.

        Args:
            correlation_id: The chunk's id (the host must have encoded for it).
            step: Index of the step within the chunk (0, 1, ...).
            parent_time: The time in the parent's own convention.
            stamp: ``(sec, nanosec)`` of the chunk's observation.
            x_t: ``(B, H, D)`` noisy normalised actions.
            timeout_s: How long to wait for the answer (s).

        Returns:
            The prediction, same shape and dtype as ``x_t``.

        Raises:
            HostFaultError: No answer within ``timeout_s``, an error status or a reply of the wrong shape.
        """
        raise NotImplementedError


class LocalHost(HostHandle):
    """A host core in the composer's process: direct calls, no serialisation."""

    def __init__(self, core: HostCore) -> None:
        super().__init__(core.name)
        self.core = core
        self.announce(core.announcement())

    def encode(self, correlation_id: int, time_s: float, dtype_bits: int) -> _Slot:
        """Encode directly in the host core; the returned slot is already set. See :meth:`HostHandle.encode`."""
        status, stamp = self.core.encode(correlation_id, time_s)
        return self.encoded(correlation_id, status, stamp, dtype_bits)

    @staticmethod
    def encoded(correlation_id: int, status: int, stamp: tuple[int, int], dtype_bits: int) -> _Slot:
        """The (already set) slot of an encode answered with ``status`` and ``stamp``."""
        slot = _Slot()
        slot.reply = protocol.Exchange(protocol.KIND_ENCODE, correlation_id, -1, float(status), stamp[0], stamp[1],
                                       dtype_bits, 1, torch.zeros(0).numpy())
        slot.event.set()
        return slot

    def predict(self, correlation_id: int, step: int, parent_time: float, stamp: tuple[int, int],
                x_t: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """Predict directly in the host core. See :meth:`HostHandle.predict`."""
        status, prediction = self.core.predict(correlation_id, x_t, parent_time)
        if status != protocol.OK:
            raise HostFaultError(self.name, f"step {step}: {protocol.STATUS[status]}")
        return prediction.to(x_t.dtype)


class RemoteHost(HostHandle):
    """A host in another process, reached over the exchange topics.

    ``send(exchange)`` puts a request on the wire; the transport calls :meth:`deliver` with every reply (from any
    thread).
    """

    def __init__(self, name: str, send: Callable[[protocol.Exchange], None]) -> None:
        super().__init__(name)
        self._send = send
        self._pending: dict[tuple[int, int, int], _Slot] = {}
        self._lock = threading.Lock()

    def deliver(self, reply: protocol.Exchange) -> None:
        """Hand one reply from the wire to the call waiting for it (late or unknown replies are dropped).

        Args:
            reply: The unpacked reply; matched to its request by ``(kind, correlation_id, step)``.
        """
        if self.announced is not None:
            self.mark_up()
        with self._lock:
            slot = self._pending.pop((reply.kind, reply.correlation_id, reply.step), None)
        if slot is not None:
            slot.reply = reply
            slot.event.set()

    def _submit(self, request: protocol.Exchange) -> _Slot:
        slot = _Slot()
        with self._lock:
            self._pending[(request.kind, request.correlation_id, request.step)] = slot
        self._send(request)
        return slot

    def forget(self, correlation_id: int) -> None:
        """Drop the waits of an old chunk (late replies to it are ignored)."""
        with self._lock:
            for key in [k for k in self._pending if k[1] <= correlation_id]:
                del self._pending[key]

    def encode(self, correlation_id: int, time_s: float, dtype_bits: int) -> _Slot:
        """Send an encode request; the slot is set when :meth:`deliver` gets its reply.

        See :meth:`HostHandle.encode`.
        """
        return self._submit(protocol.encode_request(correlation_id, time_s, dtype_bits))

    def predict(self, correlation_id: int, step: int, parent_time: float, stamp: tuple[int, int],
                x_t: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """Send a predict request and wait for its reply. See :meth:`HostHandle.predict`."""
        return self.submit_predict(correlation_id, step, parent_time, stamp, x_t, timeout_s).result()

    def submit_predict(self, correlation_id: int, step: int, parent_time: float, stamp: tuple[int, int],
                       x_t: torch.Tensor, timeout_s: float) -> PendingStep:
        """Send a predict request now; the returned step's ``result()`` waits for the reply.

        Same arguments as :meth:`HostHandle.predict`; ``timeout_s`` counts from the moment the request was sent.
        """
        x = x_t.detach().contiguous().numpy()
        slot = self._submit(protocol.predict_request(correlation_id, step, parent_time, stamp, x))
        return PendingStep(self, correlation_id, step, slot, x_t, timeout_s)

    def _drop(self, kind: int, correlation_id: int, step: int) -> None:
        with self._lock:
            self._pending.pop((kind, correlation_id, step), None)


class PendingStep:
    """One predict request on the wire (:meth:`RemoteHost.submit_predict`); :meth:`result` waits for its reply."""

    def __init__(self, host: RemoteHost, correlation_id: int, step: int, slot: _Slot, x_t: torch.Tensor,
                 timeout_s: float) -> None:
        self.host, self.correlation_id, self.step, self.slot = host, correlation_id, step, slot
        self.shape, self.dtype, self.timeout_s = tuple(x_t.shape), x_t.dtype, timeout_s
        self.deadline_s = time.monotonic() + timeout_s

    def result(self) -> torch.Tensor:
        """The host's prediction, same shape and dtype as the request's ``x_t``.

        Raises:
            HostFaultError: No reply within ``timeout_s`` of sending, an error status or a reply of the wrong shape.
        """
        name, step = self.host.name, self.step
        if not self.slot.event.wait(max(0.0, self.deadline_s - time.monotonic())):
            self.host._drop(protocol.KIND_PREDICT, self.correlation_id, step)
            raise HostFaultError(name, f"no reply to step {step} within {self.timeout_s} s (stalled or gone)")
        reply = self.slot.reply
        if reply.status != protocol.OK:
            raise HostFaultError(name, f"step {step}: {protocol.STATUS.get(reply.status, reply.status)}")
        if tuple(reply.tensor.shape) != self.shape:
            raise HostFaultError(name, f"step {step}: reply of shape {reply.tensor.shape}, expected {self.shape}")
        return torch.from_numpy(reply.tensor).to(self.dtype)


class ProxyParent:
    """A parent whose ``predict`` forwards to a host (the core's contract, built from the host's announcement)."""

    def __init__(self, handle: HostHandle, step_timeout_s: float) -> None:
        a = handle.announced
        self.handle = handle
        self.name = handle.name
        self.parameterization = Parameterization.parse(a["parameterization"])
        self.time_convention = time_convention_from(a["time_convention"])
        self.action_horizon = int(a["action_horizon"])
        self.action_dim = int(a["action_dim"])
        self.normalization = normalization_from(a["normalization"])
        self.step_timeout_s = step_timeout_s
        self.correlation_id = 0
        self.stamp = (0, 0)
        self.step = 0

    def begin(self, correlation_id: int, stamp: tuple[int, int]) -> None:
        """Start a new chunk: the following :meth:`predict` calls belong to it, counted from step 0.

        Args:
            correlation_id: The chunk's id.
            stamp: ``(sec, nanosec)`` of the chunk's observation.
        """
        self.correlation_id, self.stamp, self.step = correlation_id, stamp, 0

    def encode(self, observation: Any) -> torch.Tensor:  # the host holds the real encoding
        """A ``(1, 1)`` placeholder: the host holds the real encoding (made by :meth:`HostHandle.encode`)."""
        return torch.zeros(1, 1)

    def predict(self, x_t: torch.Tensor, timestep: float, encoding: Any) -> torch.Tensor:
        """Forward one step to the host and return its ``(B, H, D)`` prediction for ``x_t``.

        Args:
            x_t: ``(B, H, D)`` noisy normalised actions.
            timestep: The time in the parent's convention.
            encoding: Unused (the host encoded already).
        """
        step, self.step = self.step, self.step + 1
        return self.handle.predict(self.correlation_id, step, float(timestep), self.stamp, x_t, self.step_timeout_s)

    def joint_step_with(self, parents: Sequence[object]) -> LocalJointStep | None:
        """One call per step for in-process hosts whose parents offer a joint step together, else None.

        Every parent must be a proxy of a :class:`LocalHost` whose parent offers one (traced heads,
        ``HostConfig.trace_head``; :class:`~gpc_ros.compose.parent.JointStep`).
        """
        parents = self._local_with(parents)
        inner = joint_step([p.handle.core.parent for p in parents]) if parents else None
        return LocalJointStep(parents, inner) if inner is not None else None

    def worker_step_with(self, parents: Sequence[object]) -> LocalJointStep | None:
        """The joint step of in-process hosts with heads 2..K in spinning worker processes, else None.

        ``composer.joint_step_workers``. Every parent must be a proxy of a :class:`LocalHost` whose parent offers
        one (traced heads on the CPU, ``HostConfig.trace_head``;
        :class:`~gpc_ros.policies.spin_worker.SpinningHeadsStep`, which starts the worker processes). Hosts in
        other processes offer none.
        """
        parents = self._local_with(parents)
        inner = worker_step([p.handle.core.parent for p in parents]) if parents else None
        return LocalJointStep(parents, inner) if inner is not None else None

    def joint_encode_with(self, parents: Sequence[object]) -> LocalJointEncode | None:
        """One encode call per chunk for in-process hosts whose parents offer a joint encode together, else None.

        Every parent must be a proxy of a :class:`LocalHost` whose parent offers one (traced heads,
        ``HostConfig.trace_head``; :class:`~gpc_ros.compose.parent.JointEncode`). The graph composer asks it
        (:meth:`LocalJointEncode.encode_hosts`) instead of each host's encode.
        """
        parents = self._local_with(parents)
        inner = joint_encode([p.handle.core.parent for p in parents]) if parents else None
        return LocalJointEncode(parents, inner) if inner is not None else None

    def _local_with(self, parents: Sequence[object]) -> list[ProxyParent] | None:
        """``parents`` when this proxy is the first and every one is a proxy of a :class:`LocalHost`, else None."""
        parents = list(parents)
        if parents[0] is not self or not all(isinstance(p, ProxyParent) and isinstance(p.handle, LocalHost)
                                             for p in parents):
            return None
        return parents


class LocalJointEncode:
    """The encode of in-process hosts in ONE call of their parents' joint encode (:meth:`encode_hosts`).

    Each host's window and stamp are read as :meth:`HostCore.encode` reads them, and each encoding is kept in its
    host for the chunk's steps. If a host has no observation or the joint call fails, each host encodes alone (the
    statuses, and the failing host's name in the log, are those of :meth:`HostCore.encode`).
    """

    def __init__(self, proxies: Sequence[ProxyParent], inner: Any) -> None:
        self.proxies = list(proxies)
        self.inner = inner

    def __call__(self, observations: Sequence[Any]) -> list[torch.Tensor]:
        """The proxies' placeholders (:meth:`ProxyParent.encode`): the hosts hold the encodings."""
        return [p.encode(o) for p, o in zip(self.proxies, observations)]

    def encode_hosts(self, correlation_id: int, time_s: float) -> list[tuple[int, tuple[int, int]]]:
        """Encode every host's window at ``time_s`` for ``correlation_id``; ``(status, stamp)`` per host, in order."""
        cores = [p.handle.core for p in self.proxies]
        found = [core.observe(time_s) for core in cores]
        encodings = None
        if all(f is not None for f in found):
            try:
                with torch.no_grad():
                    encodings = self.inner([f[0] for f in found])
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                logger.warning("the joint encode of hosts %s failed (%s); each host encodes alone",
                               [p.name for p in self.proxies], exc)
        if encodings is None:
            return [core.encode(correlation_id, time_s) for core in cores]
        for core, (_, stamp), encoding in zip(cores, found, encodings):
            core.store_encoding(correlation_id, encoding, stamp)
        return [(protocol.OK, stamp) for _, stamp in found]


class LocalJointStep:
    """One denoising step of in-process hosts in ONE call of their parents' joint step.

    Answers what each :class:`LocalHost` step answers, with the same checks and faults (:class:`HostFaultError`
    naming the host). If the joint call itself fails, each host's step is made alone, so the failing host is the
    one named.
    """

    def __init__(self, proxies: Sequence[ProxyParent], inner: Any) -> None:
        self.proxies = list(proxies)
        self.inner = inner

    def new_chunk(self) -> None:
        """A chunk begins (passed on to the parents' joint step)."""
        self.inner.new_chunk()

    def end_chunk(self) -> None:
        """The chunk's last step is done, or it failed (passed on if the parents' joint step has the hook)."""
        end_chunk = getattr(self.inner, "end_chunk", None)
        if callable(end_chunk):
            end_chunk()

    def close(self) -> None:
        """The composer is closed: passed on if the parents' joint step has the hook (worker processes stop)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def __call__(self, requests: Sequence[tuple[torch.Tensor, float, Any]]) -> list[torch.Tensor]:
        """One ``(x_t, timestep, encoding)`` per host, in order (the encoding is the host's) -> the predictions."""
        pending = self.start(requests)
        return [pending.first, *pending.rest()]

    def start(self, requests: Sequence[tuple[torch.Tensor, float, Any]]) -> PendingLocalStep:
        """The step split in two (the composer's ``JointStep.start``): the first host's answer now, the others' later.

        With a parents' joint step that has ``start`` (spinning workers), the other hosts' predictions are still
        being made while the composer converts the first answer; otherwise they are already made.
        """
        steps, encodings = [], []
        for proxy, (x_t, _, _) in zip(self.proxies, requests):
            step, proxy.step = proxy.step, proxy.step + 1
            status, encoding = proxy.handle.core.step_encoding(proxy.correlation_id, x_t)
            if status != protocol.OK:
                raise HostFaultError(proxy.name, f"step {step}: {protocol.STATUS[status]}")
            steps.append(step)
            encodings.append(encoding)
        inner = [(x_t, t, e) for (x_t, t, _), e in zip(requests, encodings)]
        inner_start = getattr(self.inner, "start", None)
        pending = None
        try:
            if inner_start is None:
                predictions = self.inner(inner)
            else:
                pending = inner_start(inner)
                predictions = [pending.first]
        except (ValueError, RuntimeError) as exc:
            self._failed(exc)
            predictions = pending = None
        return PendingLocalStep(self, requests, steps, predictions, pending)

    def _failed(self, exc: BaseException) -> None:
        logger.warning("the joint step of hosts %s failed (%s); each host's step alone",
                       [p.name for p in self.proxies], exc)

    def _answer(self, i: int, request: tuple[torch.Tensor, float, Any], step: int,
                prediction: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """Host ``i``'s answer and whether it is the very tensor its host found finite.

        The joint step's ``prediction`` checked by the host, or (None) the host's step alone. Not "found finite"
        after a dtype conversion here (it could overflow).
        """
        proxy, (x_t, t, _) = self.proxies[i], request
        core = proxy.handle.core
        if prediction is None:
            status, prediction = core.predict(proxy.correlation_id, x_t, t)
        else:
            status, prediction = core.step_result(prediction)
        if status != protocol.OK:
            raise HostFaultError(proxy.name, f"step {step}: {protocol.STATUS[status]}")
        answer = prediction.to(x_t.dtype)
        return answer, answer is prediction


class PendingLocalStep:
    """A started :class:`LocalJointStep` step: the first host's answer (``first``), the others' from :meth:`rest`."""

    def __init__(self, step: LocalJointStep, requests: Sequence[tuple[torch.Tensor, float, Any]], steps: list[int],
                 predictions: list[torch.Tensor] | None, pending: Any) -> None:
        self._step, self._requests, self._steps = step, requests, steps
        self._predictions, self._pending = predictions, pending
        self._rest: list[torch.Tensor] | None = None
        self.first, finite = step._answer(0, requests[0], steps[0], None if predictions is None else predictions[0])
        """The first host's answer (what its step answers)."""
        self.finite = [finite]
        """Per host so far: its answer is the tensor its host found finite (``PendingJointStep.finite``: the
        composer does not check it again)."""

    def rest(self) -> list[torch.Tensor]:
        """The other hosts' answers, in order (once)."""
        if self._rest is None:
            predictions = self._predictions
            if self._pending is not None:
                try:
                    predictions = [predictions[0], *self._pending.rest()]
                except (ValueError, RuntimeError) as exc:
                    self._step._failed(exc)
                    predictions = None
            answers = [self._step._answer(i, self._requests[i], self._steps[i],
                                          None if predictions is None else predictions[i])
                       for i in range(1, len(self._requests))]
            self._rest = [a for a, _ in answers]
            self.finite += [finite for _, finite in answers]
        return self._rest


class SplitPhaseProxyParent(ProxyParent):
    """A split-phase :class:`ProxyParent` of a :class:`RemoteHost`: :meth:`submit` sends a step, returns at once.

    It is a :class:`~gpc_ros.compose.parent.SplitPhaseParent`, so the core Composer sends every host's step from
    one thread before waiting for any.
    """

    handle: RemoteHost

    def submit(self, x_t: torch.Tensor, timestep: float, encoding: Any) -> PendingStep:
        """Send one step to the host (the same request :meth:`predict` sends); ``result()`` waits for the reply."""
        step, self.step = self.step, self.step + 1
        return self.handle.submit_predict(self.correlation_id, step, float(timestep), self.stamp, x_t,
                                          self.step_timeout_s)


@dataclass
class ChunkResult:
    """One composed chunk (or the reason there is none)."""

    correlation_id: int
    actions: torch.Tensor | None = None
    """``(H, D)`` physical composed actions (candidate 0, observation 0); None = no chunk."""
    parent_actions: dict[str, torch.Tensor] = field(default_factory=dict)
    stamp_s: float = math.nan
    """Newest observation stamp among the hosts (the chunk's observation time)."""
    start_s: float = math.nan
    """When the chunk's first action is due: ``stamp_s + first_action_delay_s`` rounded to whole nanoseconds (the
    published header.stamp, so a subscriber recovers it exactly)."""
    warm_start: str = "off"
    """off (cold start from noise) | plan (started from the driver's running plan) | why the plan was not used."""
    weights: dict[str, float] = field(default_factory=dict)
    mode: str = "normal"
    """normal | renormalized | fallback | hold | refused."""
    reason: str = ""
    seed: int | None = None
    faults: dict[str, str] = field(default_factory=dict)


class GraphComposer:
    """Composes the hosts' parents per chunk (see the module docstring); thread-safe for weight changes.

    ``split_phase`` (default True): remote hosts' steps are sent from the composer's thread, then awaited; False
    sends each from its own thread of the core Composer's pool with ``composer.parallel_parents`` True (the path
    before split-phase, kept for comparison, e.g. in ``bench/bench_graph.py``). Both give the identical chunk.
    In-process hosts (:class:`LocalHost`) follow ``composer.parallel_parents`` (threads, one after the other, or
    "auto": whichever measures faster).
    """

    def __init__(self, config: ComposerNodeConfig, handles: Sequence[HostHandle], split_phase: bool = True) -> None:
        self.config = config
        self.split_phase = split_phase
        self.handles = {h.name: h for h in handles}
        missing = set(config.parents) - set(self.handles)
        if missing:
            raise ValueError(f"no host handle for parent(s) {sorted(missing)}")
        self._composers: dict[tuple[str, ...], tuple[Composer, list[ProxyParent], tuple[int, ...]]] = {}
        self._correlation = 0
        self.published = 0
        self.counters = {"chunks": 0, "refused": 0, "faults": 0, "held": 0, "renormalized": 0, "fallback": 0}

    # ----------------------------------------------------------------------------------------------- set-up checks
    def check_compatible(self) -> None:
        """Raise IncompatibleParentError naming both parents if the announced parents cannot be composed.

        Builds a Composer of the announced parents to check them. With ``composer.joint_step_workers`` (hosts in
        this process only, so called once, before any chunk) that Composer is kept for the chunks: its worker
        processes start here and serve them, instead of being started and stopped only to validate. Otherwise it
        is closed at once (remote hosts' announcements call this while a chunk may be composed).
        """
        if self.config.composer.joint_step_workers:
            remote = [n for n in self.config.parents if not isinstance(self.handles[n], LocalHost)]
            if remote:
                raise IncompatibleParentError(
                    f"composer.joint_step_workers=True runs the heads of hosts in the composer's process "
                    f"(deployment: in_process, trace_head: true) in worker processes; host(s) {remote} are in "
                    f"separate processes (their steps go over the exchange topics); set composer.joint_step_workers "
                    f"false", parent=remote[0])
        announced = [self.handles[n] for n in self.config.parents if self.handles[n].announced is not None]
        if not announced:
            return
        if self.config.composer.joint_step_workers:
            self._composer(tuple(h.name for h in announced))
        else:
            Composer([ProxyParent(h, 1.0) for h in announced], self.config.composer).close()

    def reconfigure(self, config: ComposerNodeConfig) -> None:
        """Take new weights / sampler / operator from the next chunk on (the config was validated on set)."""
        if config.composer != self.config.composer or config.step_timeout_s != self.config.step_timeout_s:
            self.close()
        self.config = config

    def _composer(self, names: tuple[str, ...]) -> tuple[Composer, list[ProxyParent]]:
        cached = self._composers.get(names)
        announced = tuple(id(self.handles[n].announced) for n in names)
        if cached is None or cached[2] != announced:
            if cached is not None:
                cached[0].close()
            proxies = [self._proxy(self.handles[n]) for n in names]
            config = self.config.composer
            if len(names) < 2 and config.joint_step_workers:  # one parent (a weight 0, a fault): no head beside it
                config = replace(config, joint_step_workers=False)
            cached = (Composer(proxies, config), proxies, announced)
            self._composers[names] = cached
        return cached[0], cached[1]

    def _proxy(self, handle: HostHandle) -> ProxyParent:
        split = self.split_phase and isinstance(handle, RemoteHost)
        return (SplitPhaseProxyParent if split else ProxyParent)(handle, self.config.step_timeout_s)

    # ------------------------------------------------------------------------------------------------------ compose
    def compose(self, now_s: float, plan: RunningPlan | None = None) -> ChunkResult:
        """Compose one chunk at ``now_s``: encode on every host with a non-zero weight, then sample.

        Refuses (``mode="refused"``) without an announced host, when a host has no observation, or when the observations
        are older than ``max_observation_age_s`` or further apart than ``max_observation_skew_s``. A host that fails
        is handled per ``on_fault`` (renormalize, fallback or hold).

        Args:
            now_s: The chunk's time (s, ROS clock).
            plan: The driver's running plan; with ``warm_start_from_plan`` the chunk starts from it (see
                :func:`gpc_ros.compose.warm_start.warm_start_from_plan`), else it is ignored.

        Returns:
            The chunk (``actions`` ``(H, D)`` physical) or, with ``actions`` None, the reason there is none.
        """
        cfg = self.config
        self._correlation += 1
        corr = self._correlation
        weights = dict(zip(cfg.parents, cfg.weights))
        result = ChunkResult(corr)
        faults: dict[str, str] = {n: "not announced (not started yet, or incompatible)" for n in cfg.parents
                                  if weights[n] != 0.0 and self.handles[n].announced is None}
        wanted = [n for n in cfg.parents if weights[n] != 0.0 and self.handles[n].announced is not None]
        if not wanted:
            return self._refuse(result, "no announced host with a non-zero weight")
        bits = 64 if cfg.composer.dtype == "float64" else 32
        slots = self._encode(corr, now_s, bits, wanted)
        deadline = time.monotonic() + cfg.encode_timeout_s
        stamps: dict[str, float] = {}
        for n in wanted:
            handle, slot = self.handles[n], slots[n]
            if handle.up:
                slot.event.wait(max(0.0, deadline - time.monotonic()))
            if slot.reply is None:
                if handle.up:
                    handle.mark_down(f"no reply to encode within {cfg.encode_timeout_s} s")
                faults[n] = handle.down_reason or "down"
                continue
            status = slot.reply.status
            if status == protocol.NO_OBSERVATION:
                return self._refuse(result, f"host {n!r} has no observation at or before the chunk's time")
            if status != protocol.OK:
                faults[n] = f"encode: {protocol.STATUS.get(status, status)}"
                continue
            handle.mark_up()
            stamps[n] = slot.reply.stamp_s
        for n, stamp in stamps.items():
            age = now_s - stamp
            if age > cfg.max_observation_age_s:
                return self._refuse(result, f"stale observation: host {n!r}'s newest is {age:.3f} s old "
                                            f"(max_observation_age_s {cfg.max_observation_age_s})")
        if len(stamps) > 1:
            skew = max(stamps.values()) - min(stamps.values())
            if skew > cfg.max_observation_skew_s:
                return self._refuse(result, f"skewed observations: the hosts' stamps differ by {skew:.3f} s "
                                            f"(max_observation_skew_s {cfg.max_observation_skew_s}): "
                                            + ", ".join(f"{n} {s:.3f}" for n, s in stamps.items()))
        result.stamp_s = max(stamps.values()) if stamps else math.nan
        if stamps:
            sec, nsec = protocol.split_stamp(result.stamp_s + cfg.first_action_delay_s)
            result.start_s = sec + nsec * 1e-9
        seed = cfg.seed + self.published if cfg.seed >= 0 else int(torch.randint(0, 2**31 - 1, (1,)))
        result.seed = seed
        healthy = [n for n in wanted if n in stamps]
        while True:
            choice = self._plan(weights, healthy, faults)
            if choice is None:
                self.counters["held"] += 1
                result.mode, result.faults = "hold", dict(faults)
                result.reason = f"holding: host fault(s) {faults} (on_fault {cfg.on_fault})"
                self.counters["faults"] += 1
                return result
            names, w, mode = choice
            try:
                return self._sample(result, names, w, mode, seed, stamps, faults, plan)
            except HostFaultError as fault:
                self.handles[fault.host].mark_down(fault.reason)
                faults[fault.host] = fault.reason
                healthy = [n for n in healthy if n != fault.host]
            except NonFinitePredictionError as exc:  # NaN or a wrong shape seen by the core itself
                if exc.parent is None or exc.parent not in healthy:
                    raise
                faults[exc.parent] = str(exc)
                healthy = [n for n in healthy if n != exc.parent]
            finally:
                for n in wanted:
                    if isinstance(self.handles[n], RemoteHost):
                        self.handles[n].forget(corr)

    def _encode(self, corr: int, now_s: float, bits: int, wanted: list[str]) -> dict[str, _Slot]:
        """Ask every wanted host to encode: in-process hosts that offer it in one joint call, else host by host."""
        handles = [self.handles[n] for n in wanted]
        if len(handles) >= 2 and all(isinstance(h, LocalHost) for h in handles):
            composer, _ = self._composer(tuple(wanted))
            joint = composer.joint_encoder
            if isinstance(joint, LocalJointEncode):
                composer.stats.joint_encodes += 1
                answers = joint.encode_hosts(corr, now_s)
                return {n: LocalHost.encoded(corr, status, stamp, bits) for n, (status, stamp) in zip(wanted, answers)}
        return {n: h.encode(corr, now_s, bits) for n, h in zip(wanted, handles)}

    def _plan(self, weights: dict[str, float], healthy: list[str], faults: dict[str, str]
              ) -> tuple[tuple[str, ...], list[float], str] | None:
        """Which parents and weights this chunk uses, given the faults (None = hold)."""
        cfg = self.config
        if not faults:
            names = tuple(n for n in cfg.parents if n in healthy)
            return names, [weights[n] for n in names], "normal"
        if cfg.on_fault == "hold":
            return None
        if cfg.on_fault == "fallback":
            if cfg.fallback_parent in healthy:
                return (cfg.fallback_parent,), [1.0], "fallback"
            return None
        names = tuple(n for n in cfg.parents if n in healthy)
        total = sum(weights[n] for n in names)
        if not names or total <= 0:
            return None
        return names, [weights[n] / total for n in names], "renormalized"

    def _sample(self, result: ChunkResult, names: tuple[str, ...], w: list[float], mode: str, seed: int,
                stamps: dict[str, float], faults: dict[str, str], plan: RunningPlan | None) -> ChunkResult:
        composer, proxies = self._composer(names)
        warm, result.warm_start = self._warm_start(composer, result.start_s, plan)
        for proxy in proxies:
            proxy.begin(result.correlation_id, protocol.split_stamp(stamps[proxy.name]))
        out = composer.compose([torch.zeros(1, 1)] * len(names), torch.tensor(w, dtype=torch.float64),
                               generator=seed, warm_start=warm)
        result.actions = out.actions[0, 0]
        result.parent_actions = {n: a[0] for n, a in out.parent_actions.items()}
        result.weights = dict(zip(names, w))
        result.mode, result.faults = mode, dict(faults)
        if faults:
            self.counters["faults"] += 1
            self.counters[mode] += 1
            result.reason = f"{mode} after host fault(s): " + "; ".join(f"{n}: {r}" for n, r in faults.items())
        self.counters["chunks"] += 1
        self.published += 1
        return result

    def _warm_start(self, composer: Composer, start_s: float, plan: RunningPlan | None):
        """The chunk's warm start from ``plan`` (or None) and what happened, for ``ChunkResult.warm_start``."""
        cfg = self.config
        if not cfg.warm_start_from_plan:
            return None, "off"
        if plan is None:
            return None, "cold: no running plan"
        try:
            warm = warm_start_from_plan(plan, start_s, cfg.dt_s, composer.horizon, composer.action_dim,
                                        composer.normalization, cfg.composer.warm_start.pad, composer.dtype)
        except ValueError as exc:
            logger.warning("warm start not possible, cold start: %s", exc)
            return None, f"cold: {exc}"
        return warm, "plan"

    def _refuse(self, result: ChunkResult, reason: str) -> ChunkResult:
        self.counters["refused"] += 1
        result.mode, result.reason = "refused", reason
        return result

    def close(self) -> None:
        """Close the cached composers (their workers stop: ``joint_step_workers``); rebuilt on the next chunk."""
        for composer, *_ in self._composers.values():
            composer.close()
        self._composers.clear()



class EpisodeSearch:
    """The online weight search of the composer: one arm (weight vector) per episode.

    Outcomes are recorded and the state saved to ``path`` after each (resumed on restart). Wraps
    :class:`gpc_ros.compose.search.WeightSearch`.
    """

    def __init__(self, path: str, parents: Sequence[str], strategy: str = "thompson", divisions: int = 10,
                 seed: int = 0) -> None:
        from gpc_ros.compose.search import SearchConfig, WeightSearch, simplex_grid

        self.path = path
        arms = simplex_grid(len(parents), divisions)
        self.search = WeightSearch.load_or_create(path, arms, list(parents), SearchConfig(strategy, seed=seed))
        self.arm, self.weights = self.search.next_arm()

    def outcome(self, success: bool) -> tuple[float, ...]:
        """Record the running episode's outcome, save, and return the next episode's weights."""
        self.search.record(self.arm, success)
        self.search.save(self.path)
        self.arm, self.weights = self.search.next_arm()
        return tuple(float(w) for w in self.weights)
