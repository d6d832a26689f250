"""A parent's noise head run as a frozen TorchScript trace (``ChunkPolicy.as_parent(trace_head=True)``).

The shipped heads are small (1.6 M parameters): one eager forward is ~2 ms of about a hundred small ops, and most of
it is Python dispatch that holds the GIL, so two parents' eager forwards in two threads do not overlap
(docs/graph.md). ``torch.jit.trace`` + ``torch.jit.freeze`` runs the same ops in C++ without the GIL: the
prediction is bit-identical (``torch.equal``, tested) in ~0.55x the eager time, and two parents' traced heads in
two threads (``ComposerConfig.parallel_parents``) run at the same time.

A trace is specialised to its input shapes, so :class:`TracedHead` keeps one per input signature (rows, horizon,
conditioning width, dtype, device): a composer asks for 1 row per candidate and observation, plus one per parent
when it also samples each parent alone. A new signature's trace is made on a background thread (about 0.45 s for
a shipped head, logged) while the calls with that signature run eagerly; ``background=False`` traces in the first
call instead. The weights are frozen into the trace: a trace is dropped and redone when any parameter or buffer has been
changed in place (``load_state_dict``, an optimizer step: torch's version counters), but a parameter REPLACED by a
new tensor object is not noticed; call :meth:`TracedHead.reset` after that. In training mode, with gradients
enabled or with a non-tensor encoding the module runs eagerly (a trace is for inference only).

:class:`ForkedHeads` puts K heads in one module whose forward forks heads 1..K-1 onto torch's inter-op pool
(``torch.jit.fork``) and runs head 0 on the calling thread; traced (:func:`forked_heads`), one call per
denoising step runs all K heads at the same time in C++, without the GIL and without handing work to a Python
thread (the composer's joint step, ``ComposerConfig.joint_step``; docs/graph.md, session 11).
:class:`ForkedEncoders` does the same for K parents' observation encoders, once per chunk (the composer's joint
encode, ``ComposerConfig.joint_encode``; docs/graph.md, session 12).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)

_TRACING = threading.Lock()
"""One trace at a time in a process: two traces made at once in two threads (two parents' first step in
``parallel_parents`` threads) failed torch's trace check (graphs differed across invocations)."""


class TracedHead:
    """``(x_t (M, H, D), network_time (M,), encoding (M, C)) -> (M, H, D)`` through a frozen trace of ``module``.

    ``max_traces``: traces kept (one per input signature); the oldest is dropped beyond that.
    ``background``: make a new signature's trace on a thread of its own and answer eagerly until it is ready (the
    same prediction), so no call waits the ~0.45 s a trace takes (a separate host's first step would otherwise
    exceed the composer's ``step_timeout_s``); False: trace in the first call. A trace that failed in the background
    is raised by the next call.
    ``check_every_call``: read the weights' version counters at every call (True) or only in
    :meth:`check_weights` (False: the composer's joint step checks once per chunk; reading ~300 counters per
    denoising step cost up to ~0.1 ms, docs/graph.md session 11).
    """

    def __init__(self, module: nn.Module, max_traces: int = 8, background: bool = True,
                 check_every_call: bool = True) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"TracedHead.module must be a torch.nn.Module; got {type(module).__name__}")
        if not (isinstance(max_traces, int) and not isinstance(max_traces, bool) and max_traces >= 1):
            raise ValueError(f"TracedHead.max_traces must be an int >= 1; got {max_traces!r}")
        if not isinstance(background, bool):
            raise TypeError(f"TracedHead.background must be True or False; got {background!r}")
        if not isinstance(check_every_call, bool):
            raise TypeError(f"TracedHead.check_every_call must be True or False; got {check_every_call!r}")
        self.check_every_call = check_every_call
        self.module = module
        self.max_traces = max_traces
        self.background = background
        self.traces_made = 0
        """Traces made so far (new signatures and retraces after weight changes)."""
        self.calls_traced = 0
        """Calls answered by a trace."""
        self.calls_eager = 0
        """Calls answered eagerly (training mode, grad mode on, no trace yet for their inputs' shapes)."""
        self._traces: dict[tuple, torch.jit.ScriptModule] = {}
        self._pending: dict[tuple, threading.Thread] = {}
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Drop every trace and re-read the module's parameters and buffers (after replacing one of them)."""
        with self._lock:
            self._tensors = [*self.module.parameters(), *self.module.buffers()]
            self._versions = self._current_versions()
            self._traces.clear()

    def check_weights(self) -> None:
        """Drop the traces if a parameter or buffer changed in place since the last check (version counters)."""
        with self._lock:
            self._check_weights_locked()

    def _check_weights_locked(self) -> None:
        versions = self._current_versions()
        if versions != self._versions:
            logger.info("the traced head's weights changed in place: dropping its %d trace(s)", len(self._traces))
            self._traces.clear()
            self._versions = versions

    def _current_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._tensors)

    def __call__(self, *args: object) -> object:
        """The module's output for ``args``, through the trace for these inputs' shapes (made on first use).

        A head: ``(x_t (M, H, D), network_time (M,), encoding (M, C)) -> (M, H, D)``; any module whose inputs are
        all tensors (:class:`ForkedHeads`: its heads' inputs one after the other).
        """
        if not all(isinstance(a, torch.Tensor) for a in args) or self.module.training or torch.is_grad_enabled():
            self.calls_eager += 1
            return self.module(*args)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        with self._lock:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise RuntimeError(f"tracing the head of {type(self.module).__name__} failed") from failure
            if self.check_every_call:
                self._check_weights_locked()
            versions = self._versions
            traced = self._traces.get(key)
            if traced is None and not self.background:
                traced = self._install(key, self._trace(key, args))
            elif traced is None and key not in self._pending:
                example = tuple(a.detach().clone() for a in args)
                thread = threading.Thread(target=self._trace_in_background, args=(key, example, versions),
                                          name="gpc-trace", daemon=True)
                self._pending[key] = thread
                thread.start()
        if traced is None:
            self.calls_eager += 1
            return self.module(*args)
        self.calls_traced += 1
        return traced(*args)

    def wait_for_traces(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the traces being made in the background; True if none is left."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._pending.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return not self._pending

    def _trace_in_background(self, key: tuple, args: tuple[torch.Tensor, ...], versions: tuple[int, ...]) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                traced = self._trace(key, args)
        except BaseException as exc:  # stored and raised by the next call (the caller's thread)
            with self._lock:
                self._failure = exc
                self._pending.pop(key, None)
            return
        with self._lock:
            self._pending.pop(key, None)
            if versions == self._versions:  # else the weights changed while tracing: the next call traces again
                self._install(key, traced)

    def _install(self, key: tuple, traced: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
        """Keep ``traced`` for ``key`` (caller holds the lock)."""
        if len(self._traces) >= self.max_traces:
            self._traces.pop(next(iter(self._traces)))
        self._traces[key] = traced
        return traced

    def _trace(self, key: tuple, args: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
        start = time.perf_counter()
        with _TRACING, warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch 2.13 marks trace and freeze deprecated (for torch.compile / torch.export); they are used because
            # they give the bit-identical prediction without a compiler toolchain (docs/graph.md, session 10)
            warnings.simplefilter("ignore", DeprecationWarning)
            # optimize_numerics=False: no folding that could change a single bit of the prediction
            traced = torch.jit.freeze(torch.jit.trace(self.module, args), optimize_numerics=False)
        self.traces_made += 1
        logger.info("traced the head of %s for inputs %s in %.0f ms", type(self.module).__name__,
                    [k[0] for k in key], (time.perf_counter() - start) * 1e3)
        return traced


class ForkedHeads(nn.Module):
    """``(x_0, t_0, c_0, ..., x_{K-1}, t_{K-1}, c_{K-1}) -> (y_0, ..., y_{K-1})``: K heads' predictions in one call.

    Traced, heads 1..K-1 are forked (``torch.jit.fork``) onto torch's inter-op pool, head 0 runs on the calling
    thread, then all are waited for: the heads run at the same time. Run eagerly (Python; while the trace is being
    made), the heads run one after the other. The predictions are each head's own, bit for bit (tested).
    """

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        if len(heads) < 2 or not all(isinstance(h, nn.Module) for h in heads):
            raise ValueError(f"ForkedHeads needs two or more torch.nn.Module heads; got {heads!r}")
        self.heads = nn.ModuleList(heads)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Three inputs per head, in the heads' order -> one prediction per head."""
        if not torch.jit.is_tracing():  # eagerly a fork would run at once anyway (and warn: deprecated)
            return tuple(head(*args[3 * i:3 * i + 3]) for i, head in enumerate(self.heads))
        futures = [torch.jit.fork(head, *args[3 * i:3 * i + 3]) for i, head in enumerate(self.heads) if i > 0]
        first = self.heads[0](*args[:3])
        return (first, *(torch.jit.wait(future) for future in futures))


def _ensure_interop_threads(need: int, what: str) -> None:
    """Give torch's inter-op pool ``need`` threads if it has fewer (only possible before inter-op work started)."""
    have = torch.get_num_interop_threads()
    if have < need:
        try:
            torch.set_num_interop_threads(need)
            logger.info("torch inter-op threads set from %d to %d for %d forked %s", have, need, need, what)
        except RuntimeError as exc:
            logger.warning("torch has %d inter-op thread(s) for %d forked %s and cannot be given more (%s): "
                           "the %s partly run one after the other", have, need, what, exc, what)


def forked_heads(heads: list[TracedHead], check_every_call: bool = True) -> TracedHead:
    """One :class:`TracedHead` over a :class:`ForkedHeads` of ``heads``' modules (their trace settings).

    Makes sure torch's inter-op pool has a thread for each forked head (``torch.set_num_interop_threads``, which
    torch allows only before any inter-op work started; if that is too late, the forked heads share the threads
    there are and the step is slower, never different: logged).
    """
    _ensure_interop_threads(len(heads) - 1, "heads")
    return TracedHead(ForkedHeads([h.module for h in heads]).eval(), max_traces=heads[0].max_traces,
                      background=heads[0].background, check_every_call=check_every_call)


class _DictInput(nn.Module):
    """``(*tensors) -> module({keys[i]: tensors[i]})``: a module that takes a dict of tensors, called with tensors."""

    def __init__(self, module: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.module(dict(zip(self.keys, tensors)))


class ForkedEncoders(nn.Module):
    """``(*encoder 0's tensors, *encoder 1's tensors, ...) -> (encoding 0, ...)``: K encoders in one call.

    Each encoder takes a dict of tensors (``keys[i]``, in that order; e.g. an
    :class:`~gpc_ros.policies.encoders.observation.ObservationEncoder`) and returns a tensor. Traced, encoders
    1..K-1 are forked (``torch.jit.fork``) and encoder 0 runs on the calling thread, as in :class:`ForkedHeads`;
    run eagerly (while the trace is made) they run one after the other. Each encoding is the encoder's own.
    """

    def __init__(self, encoders: list[nn.Module], keys: list[tuple[str, ...]]) -> None:
        super().__init__()
        if len(encoders) < 2 or len(keys) != len(encoders) or not all(isinstance(e, nn.Module) for e in encoders):
            raise ValueError(f"ForkedEncoders needs two or more torch.nn.Module encoders, one key tuple each; got "
                             f"{len(encoders)} encoder(s) and {len(keys)} key tuple(s)")
        self.encoders = nn.ModuleList(_DictInput(e, tuple(k)) for e, k in zip(encoders, keys))
        bounds = [0]
        for k in keys:
            bounds.append(bounds[-1] + len(k))
        self.bounds = bounds

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each encoder's tensors (its keys' order), encoders in order -> one encoding per encoder."""
        groups = [args[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        if not torch.jit.is_tracing():  # eagerly a fork would run at once anyway (and warn: deprecated)
            return tuple(encoder(*group) for encoder, group in zip(self.encoders, groups))
        futures = [torch.jit.fork(encoder, *group) for i, (encoder, group) in enumerate(zip(self.encoders, groups))
                   if i > 0]
        first = self.encoders[0](*groups[0])
        return (first, *(torch.jit.wait(future) for future in futures))


def forked_encoders(encoders: list[nn.Module], keys: list[tuple[str, ...]], max_traces: int = 8,
                    background: bool = True) -> TracedHead:
    """One :class:`TracedHead` over a :class:`ForkedEncoders` of ``encoders`` (inter-op threads: :func:`forked_heads`).

    The weights' version counters are read at every call (one call per chunk).
    """
    _ensure_interop_threads(len(encoders) - 1, "encoders")
    return TracedHead(ForkedEncoders(encoders, keys).eval(), max_traces=max_traces, background=background)
