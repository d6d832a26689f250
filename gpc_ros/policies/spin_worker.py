"""A joint denoising step whose heads 2..K run in worker processes that spin between steps (issue #12).

``ComposerConfig.joint_step_workers``. The in-process joint step (:class:`~gpc_ros.policies.adapter.JointHeadsStep`)
forks head 2 onto torch's inter-op pool: a sleeping thread is woken at every denoising step (60-150 us a round trip,
and the woken thread runs the head ~13 % slower; docs/graph.md, session 13). Here head 1 runs on the calling thread
and each other head in a process of its own (``multiprocessing`` spawn) that busy-polls a sequence number in shared
memory while a chunk is being sampled (a round trip of ~7 us) and sleeps on a semaphore between chunks:

* start-up: the head's module (the eager ``nn.Module``, pickled) goes to the worker, which traces it per input
  signature as :class:`~gpc_ros.policies.traced.TracedHead` does in process (eager meanwhile, the same prediction);
  1 intra-op torch thread; when there are at least K CPUs the caller's thread and worker ``i`` are pinned to
  CPUs ``0`` and ``i`` of the allowed ones (``os.sched_setaffinity``), otherwise nothing is pinned;
* per chunk (:meth:`SpinningHeadsStep.new_chunk`): weights changed in place (version counters, as ``TracedHead``
  checks) are sent again; the workers are woken; the encoding is copied into shared memory at the chunk's first step;
* per step: ``x_t`` and the time tensor in, the prediction out; the worker's head reads its inputs where the caller
  wrote them (the caller writes the next ones only after this step's answer, or after a step it gave up on, whose
  answer is then never read) and only the output is copied. The workers' steps are posted before head 1's inputs
  are made; :meth:`SpinningHeadsStep.start` returns after head 1, so the composer converts parent 1's prediction
  while the workers finish (session 17). The worker spins for up to ``spin_s`` after each job, and stops at once
  when the chunk ends (:meth:`SpinningHeadsStep.end_chunk`); then it sleeps (a timed semaphore wait: a missed
  wake-up costs at most ``idle_wait_s``, never a hang). The calling thread is pinned from ``new_chunk`` to
  ``end_chunk`` only.

Every wait is bounded. A worker that dies, fails or does not answer within ``step_timeout_s`` is dropped (logged
once, counted in :attr:`SpinningHeadsStep.fallback_steps`) and its parent's step runs in process (its ``predict``):
the same prediction. :meth:`SpinningHeadsStep.close` (also run when the object is garbage-collected or the
interpreter exits) stops the workers; a worker also exits when its parent process is gone.

Shared memory is read and written without locks: a request's inputs are written before its sequence number, and
the worker's output before its answer number; x86 keeps stores in order (this is not correct on weakly ordered
CPUs such as ARM, where the workers should not be used).
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import torch

from gpc_ros.compose.parent import Encoding

logger = logging.getLogger(__name__)

# header: int64 slots, then data from DATA_OFF on
REQ, DONE, ERR, QUIT, SLEEPING, READY, CTRL, CTRL_DONE, REST, DTYPE, X0, X1, X2, E_NDIM = range(14)
E_DIMS = 14  # 4 slots: the encoding's shape (to 17)
SIG = 21  # bumped by the caller when the inputs' signature (dtype, shapes: the slots above) changes
HEAD_NS, HEAD_N, TRACED_N = 22, 23, 24  # the worker's head time and calls (diagnostics)
HEADER_SLOTS = 32
DATA_OFF = 8 * HEADER_SLOTS
_DTYPES = (torch.float32, torch.float64)
_NP = {torch.float32: np.float32, torch.float64: np.float64}
_ITEMSIZE = {torch.float32: 4, torch.float64: 8}


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


def _layout(x_shape: tuple[int, ...], e_shape: tuple[int, ...], itemsize: int) -> tuple[int, int, int, int, int]:
    """Byte offsets of x, the encoding, the output and the time ``(M,)`` in the block, and the bytes needed."""
    nx, ne, nt = (int(np.prod(x_shape)) * itemsize, int(np.prod(e_shape)) * itemsize, int(x_shape[0]) * itemsize)
    x_off = DATA_OFF
    e_off = x_off + _align(nx)
    out_off = e_off + _align(ne)
    t_off = out_off + _align(nx)
    return x_off, e_off, out_off, t_off, t_off + _align(nt)


def _views(buf: Any, x_shape: tuple[int, ...], e_shape: tuple[int, ...], dtype: torch.dtype
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, the encoding, the output and the time as tensors on the block (both sides use the same layout)."""
    x_off, e_off, out_off, t_off, _ = _layout(x_shape, e_shape, _ITEMSIZE[dtype])
    return (_view(buf, x_off, x_shape, dtype), _view(buf, e_off, e_shape, dtype), _view(buf, out_off, x_shape, dtype),
            _view(buf, t_off, x_shape[:1], dtype))


def _view(buf: Any, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    n = int(np.prod(shape))
    return torch.from_numpy(np.ndarray((n,), dtype=_NP[dtype], buffer=buf, offset=offset)).view(shape)


def _worker_main(shm_name: str, module_name: str, module_size: int, cpu: int | None, conn: Any, wake: Any,
                 spin_s: float, idle_wait_s: float, max_traces: int, parent_pid: int) -> None:
    """The worker process: load the head, then answer steps until told to quit (or the parent process is gone)."""
    from gpc_ros.policies.traced import TracedHead

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    # the creator's pid, passed in: os.getppid() here would already be init's (or a subreaper's) if the creator
    # died while this interpreter was starting, and then a worker would never notice it is an orphan
    if os.getppid() != parent_pid:
        os._exit(0)
    module_shm = shared_memory.SharedMemory(name=module_name)
    try:
        module = torch.load(io.BytesIO(bytes(module_shm.buf[:module_size])), weights_only=False).eval()
    finally:
        module_shm.close()
    head = TracedHead(module, max_traces=max_traces, background=True, check_every_call=False)
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        _serve(shm.buf, head, module, conn, wake, spin_s, idle_wait_s, parent_pid)
    finally:
        shm.close()
    # a trace still being made by its (daemon) thread would abort the interpreter's shutdown ("terminate called
    # without an active exception"): let it end (bounded), then leave without the shutdown
    head.wait_for_traces(5.0)
    os._exit(0)


def _serve(buf: Any, head: Any, module: torch.nn.Module, conn: Any, wake: Any, spin_s: float, idle_wait_s: float,
           parent_pid: int) -> None:
    flags = np.ndarray((HEADER_SLOTS,), dtype=np.int64, buffer=buf)
    flags[READY] = 1
    last, ctrl_seen = int(flags[REQ]), int(flags[CTRL])
    # the head reads its inputs where the caller wrote them (x, the time, the encoding: the caller writes the next
    # ones only after this step's answer) and only its output is copied; the views are made again only when the
    # inputs' signature changes (SIG)
    v: tuple[torch.Tensor, ...] = ()
    sig = -1
    clock = time.perf_counter
    ns = time.perf_counter_ns
    t_last = -1e9  # not spinning until woken
    with torch.no_grad():
        while True:
            r = int(flags[REQ])
            if r != last:
                last = r
                start = 0
                try:
                    if flags[SIG] != sig:
                        sig = int(flags[SIG])
                        key = tuple(flags[DTYPE:E_DIMS + int(flags[E_NDIM])].tolist())
                        v = _views(buf, tuple(key[1:4]), tuple(key[5:]), _DTYPES[key[0]])
                    start = ns()
                    v[2].copy_(head(v[0], v[3], v[1]))
                except Exception:  # the caller runs this step in process (and raises there if it is the model's)
                    logger.exception("spinning head worker: step %d failed", r)
                    flags[ERR] = r
                flags[DONE] = r  # the answer first, the diagnostics after
                if start:
                    flags[HEAD_NS] += ns() - start
                    flags[HEAD_N] += 1
                    flags[TRACED_N] = head.calls_traced
                t_last = clock()
                continue
            if int(flags[CTRL]) != ctrl_seen:  # new weights: a state dict on the pipe
                ctrl_seen = int(flags[CTRL])
                if conn.poll(idle_wait_s * 10):
                    state = torch.load(io.BytesIO(conn.recv_bytes()), weights_only=False)
                    module.load_state_dict(state)
                    head.check_weights()
                flags[CTRL_DONE] = ctrl_seen
                continue
            if flags[QUIT]:
                return
            if clock() - t_last < spin_s and not flags[REST]:
                continue
            flags[SLEEPING] = 1
            if int(flags[REQ]) == last and int(flags[CTRL]) == ctrl_seen and not flags[QUIT]:
                woken = wake.acquire(timeout=idle_wait_s)
                if woken:
                    t_last = clock()  # spin again: a chunk is beginning
                elif os.getppid() != parent_pid:  # the parent process is gone: no orphan
                    return
            flags[SLEEPING] = 0


class _Worker:
    """The caller's side of one worker process (one parent's head)."""

    def __init__(self, ctx: Any, name: str, module: torch.nn.Module, cpu: int | None, buffer_bytes: int,
                 spin_s: float, idle_wait_s: float, max_traces: int) -> None:
        self.name = name
        self.shm = shared_memory.SharedMemory(create=True, size=buffer_bytes)
        self.flags = np.ndarray((HEADER_SLOTS,), dtype=np.int64, buffer=self.shm.buf)
        self.flags[:] = 0
        self.wake = ctx.Semaphore(0)
        self.conn, child_conn = ctx.Pipe()
        raw = io.BytesIO()
        torch.save(module, raw)
        data = raw.getbuffer()
        # the module goes through shared memory: in the process's arguments it would block start() until the new
        # interpreter has imported everything and read it from the pipe
        self.module_shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(create=True, size=len(data))
        self.module_shm.buf[:len(data)] = data
        self.process = ctx.Process(target=_worker_main, name=f"gpc-head-{name}", daemon=True,
                                   args=(self.shm.name, self.module_shm.name, len(data), cpu, child_conn, self.wake,
                                         spin_s, idle_wait_s, max_traces, os.getpid()))
        self.process.start()
        child_conn.close()
        self.seq = 0
        self.views: dict[tuple, tuple[torch.Tensor, ...]] = {}  # signature -> x, enc, out, t
        self.out: torch.Tensor | None = None
        self.key: tuple = ()
        self.ctrl = 0
        self.encoding: torch.Tensor | None = None  # the one in shared memory (kept alive: compared by identity)
        self.broken = False

    @property
    def ready(self) -> bool:
        ready = bool(self.flags[READY]) and not self.broken
        if ready and self.module_shm is not None:  # the worker has loaded the module
            self.free_module()
        return ready

    def free_module(self) -> None:
        if self.module_shm is not None:
            self.module_shm.close()
            self.module_shm.unlink()
            self.module_shm = None

    def post(self, x: torch.Tensor, t: torch.Tensor, encoding: torch.Tensor) -> bool:
        """Put one step in shared memory and wake the worker if it sleeps; False if it does not fit.

        ``x`` ``(M, H, D)``, the time ``t`` ``(M,)`` and the encoding, all of one dtype.
        """
        key = (_DTYPES.index(x.dtype), *x.shape, encoding.dim(), *encoding.shape)
        views = self.views.get(key)
        if views is None:
            x_shape, e_shape = tuple(x.shape), tuple(encoding.shape)
            if (_layout(x_shape, e_shape, x.element_size())[-1] > self.shm.size or len(x_shape) != 3
                    or not 1 <= len(e_shape) <= 4):
                return False
            views = self.views[key] = _views(self.shm.buf, x_shape, e_shape, x.dtype)
        flags = self.flags
        if key != self.key:  # the worker makes its views again
            flags[DTYPE:DTYPE + len(key)] = key
            flags[SIG] += 1
            self.encoding = None
        if encoding is not self.encoding:  # written only while the worker is not running a step
            views[1].copy_(encoding)
            self.encoding = encoding
        views[0].copy_(x)
        views[3].copy_(t)
        self.out, self.key = views[2], key
        self.seq += 1
        flags[REQ] = self.seq  # after the inputs (x86: stores are seen in order)
        if flags[SLEEPING]:
            self.wake.release()
        return True

    def result(self, timeout_s: float) -> torch.Tensor | None:
        """The posted step's prediction (a copy), or None if the worker failed, died or timed out."""
        flags, seq = self.flags, self.seq
        deadline = time.monotonic() + timeout_s
        n = 0
        while flags[DONE] != seq:
            n += 1
            if n % 4096 == 0 and (not self.process.is_alive() or time.monotonic() > deadline):
                return None
        if flags[ERR] == seq:
            return None
        return self.out.clone()

    def send_weights(self, module: torch.nn.Module, timeout_s: float) -> bool:
        """Send ``module``'s state dict; True when the worker has loaded it within ``timeout_s``."""
        raw = io.BytesIO()
        torch.save(module.state_dict(), raw)
        self.ctrl += 1
        self.flags[CTRL] = self.ctrl
        self.wake.release()
        try:
            self.conn.send_bytes(raw.getvalue())
        except OSError:
            return False
        deadline = time.monotonic() + timeout_s
        while self.flags[CTRL_DONE] != self.ctrl:
            if time.monotonic() > deadline or not self.process.is_alive():
                return False
            time.sleep(1e-4)
        return True


def _stop(workers: list[_Worker], pinned: dict[int, set[int]], timeout_s: float) -> None:
    """Stop the workers, free their shared memory, give pinned caller threads their CPUs back (idempotent)."""
    for w in workers:
        try:
            w.flags[QUIT] = 1
            w.wake.release()
        except (ValueError, OSError):
            pass
    for w in workers:
        w.process.join(timeout_s)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(timeout_s)
        w.conn.close()
        w.free_module()
        w.flags = w.out = None  # drop the views into the block before closing it
        w.views.clear()
        w.encoding = None
        try:
            w.shm.close()
            w.shm.unlink()
        except (FileNotFoundError, BufferError):
            pass
    workers.clear()
    for tid, cpus in pinned.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread has ended
            pass
    pinned.clear()


class SpinningHeadsStep:
    """One denoising step of K :class:`~gpc_ros.policies.adapter.ModuleParent` s, heads 2..K in spinning workers.

    Head 1 runs on the calling thread, each other head in a worker process of its own. A
    :class:`~gpc_ros.compose.parent.JointStep` (``ComposerConfig.joint_step_workers``).

    ``step([(x_t, timestep, encoding), ...])`` returns what each parent's ``predict`` returns, bit for bit (tested).
    ``spin_s``: a worker busy-polls this long after its last job before sleeping; ``idle_wait_s``: its timed sleep
    between checks; ``step_timeout_s``: the longest wait for one step's answer (then the worker is dropped and the
    step runs in process); ``buffer_bytes``: each worker's shared memory (a step that does not fit runs in process).
    The workers start in the background: until one is ready its parent's step runs in process
    (:meth:`wait_ready`).
    """

    def __init__(self, parents: Sequence[Any], spin_s: float = 0.02, idle_wait_s: float = 0.05,
                 step_timeout_s: float = 10.0, buffer_bytes: int = 16 << 20, start_timeout_s: float = 10.0) -> None:
        from gpc_ros.policies.traced import TracedHead

        self.parents = list(parents)
        if len(self.parents) < 2:
            raise ValueError(f"SpinningHeadsStep needs two or more parents; got {len(self.parents)}")
        self.step_timeout_s = step_timeout_s
        self.start_timeout_s = start_timeout_s
        first = self.parents[0]._denoiser
        self.head = TracedHead(first.module, max_traces=first.max_traces, background=first.background,
                               check_every_call=False)
        """Head 1's trace, on the calling thread (weights checked once per chunk)."""
        self.worker_steps = 0
        """Steps whose heads 2..K all ran in the workers."""
        self.head_s = 0.0
        """Time in head 1 on the calling thread (all steps)."""
        self.wait_s = 0.0
        """Time the calling thread waited for the workers after head 1 (all steps)."""
        self.fallback_steps = 0
        """Steps in which at least one head ran in process because its worker was not ready, broken or dropped."""
        cpus = sorted(os.sched_getaffinity(0))
        self.pin = len(cpus) >= len(self.parents)
        self.cpus = cpus
        ctx = mp.get_context("spawn")
        self._modules = [p._denoiser.module for p in self.parents[1:]]
        self._tensors = [[*m.parameters(), *m.buffers()] for m in self._modules]
        self._versions = [self._current(i) for i in range(len(self._modules))]
        self.workers: list[_Worker] = [
            _Worker(ctx, p.name, m, cpus[i + 1] if self.pin else None, buffer_bytes, spin_s, idle_wait_s,
                    first.max_traces)
            for i, (p, m) in enumerate(zip(self.parents[1:], self._modules))]
        self._pinned: dict[int, set[int]] = {}
        self._finalizer = weakref.finalize(self, _stop, self.workers, self._pinned, 5.0)
        self._started = time.monotonic()

    def _current(self, i: int) -> tuple[int, ...]:
        return tuple(t._version for t in self._tensors[i])

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every worker to have loaded its head; True if all are ready."""
        deadline = time.monotonic() + timeout_s
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline or any(not w.process.is_alive() for w in self.workers):
                return False
            time.sleep(0.01)
        return True

    def _drop(self, w: _Worker, why: str) -> None:
        if not w.broken:
            w.broken = True
            logger.warning("the spinning worker of parent %r %s: its steps run in process from now on "
                           "(SpinningHeadsStep.fallback_steps counts them)", w.name, why)
            if w.process.is_alive():
                w.process.kill()

    def new_chunk(self) -> None:
        """A chunk begins: check the weights (send changed ones), pin this thread, wake the workers."""
        self.head.check_weights()
        tid = threading.get_native_id()
        if self.pin and tid not in self._pinned:
            self._pinned[tid] = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpus[0]})
        for w in self.workers:
            if not w.broken:
                w.flags[REST] = 0
        for i, w in enumerate(self.workers):
            if w.broken:
                continue
            if not w.process.is_alive():
                self._drop(w, "has died")
                continue
            versions = self._current(i)
            if versions != self._versions[i] and w.ready:
                if not w.send_weights(self._modules[i], self.step_timeout_s):
                    self._drop(w, "did not take the new weights in time")
                    continue
                self._versions[i] = versions
            elif not w.ready:
                if time.monotonic() - self._started > self.start_timeout_s:
                    self._drop(w, f"was not ready within {self.start_timeout_s} s")
                continue
            w.encoding = None  # copied again at this chunk's first step
            w.wake.release()

    def __call__(self, requests: Sequence[tuple[torch.Tensor, float, Encoding]]) -> list[torch.Tensor]:
        """One ``(x_t, timestep, encoding)`` per parent, in order -> each parent's ``(M, H, D)`` prediction."""
        pending = self.start(requests)
        return [pending.first, *pending.rest()]

    def start(self, requests: Sequence[tuple[torch.Tensor, float, Encoding]]) -> PendingJointStep:
        """The step split in two: post the workers' steps, run head 1 here, return without waiting for the workers.

        The answer's ``first`` is parent 1's prediction; its ``rest()`` waits for the others' (a
        :class:`~gpc_ros.compose.parent.JointStep`'s optional ``start``: the composer converts parent 1's prediction
        while the workers finish). A started step whose ``rest()`` is never called is harmless: the worker's answer
        to it is not read, and the next step waits for its own answer (sequence numbers).
        """
        if len(requests) != len(self.parents):
            raise ValueError(f"a joint step of {len(self.parents)} parents got {len(requests)} requests")
        if any(p._denoiser.module.training for p in self.parents):  # a head in training mode runs eagerly
            predictions = [p.predict(*r) for p, r in zip(self.parents, requests)]
            return PendingJointStep(self, requests, predictions[0], [], predictions[1:])
        with torch.no_grad():
            # the workers' steps are posted first, head 1's inputs made after: the workers start sooner
            posted = []
            for w, p, r in zip(self.workers, self.parents[1:], requests[1:]):
                x, t, enc = p._denoiser_inputs(*r)
                posted.append(w.ready and isinstance(enc, torch.Tensor) and x.dtype in _DTYPES
                              and enc.dtype == x.dtype and t.dtype == x.dtype and x.device.type == "cpu"
                              and w.post(x, t, enc))
            inputs = self.parents[0]._denoiser_inputs(*requests[0])
            start = time.perf_counter()
            out = self.head(*inputs)
            self.head_s += time.perf_counter() - start
        return PendingJointStep(self, requests, self.parents[0]._prediction(out, requests[0][0]), posted, None)

    def _collect(self, requests: Sequence[tuple[torch.Tensor, float, Encoding]], posted: list[bool]
                 ) -> list[torch.Tensor]:
        """Parents 2..K's predictions of a started step: the workers' answers (or their steps run in process)."""
        start = time.perf_counter()
        outs = []
        for w, ok in zip(self.workers, posted):
            out = w.result(self.step_timeout_s) if ok else None
            if ok and out is None:
                self._drop(w, f"failed, died or did not answer a step within {self.step_timeout_s} s")
            outs.append(out)
        self.wait_s += time.perf_counter() - start
        predictions = [p.predict(*r) if out is None else p._prediction(out, r[0])
                       for p, r, out in zip(self.parents[1:], requests[1:], outs)]
        if all(o is not None for o in outs):
            self.worker_steps += 1
        else:
            self.fallback_steps += 1
        return predictions

    def reset_stats(self) -> None:
        """Zero the counters and times (between chunks)."""
        self.worker_steps = self.fallback_steps = 0
        self.head_s = self.wait_s = 0.0
        for w in self.workers:
            if w.flags is not None:
                w.flags[HEAD_NS] = w.flags[HEAD_N] = 0

    def worker_stats(self) -> list[dict[str, float]]:
        """Per worker: its head calls, those answered by its trace, and its mean head time in ms (diagnostics)."""
        return [{"calls": int(w.flags[HEAD_N]), "traced": int(w.flags[TRACED_N]),
                 "head_ms": round(float(w.flags[HEAD_NS]) / max(int(w.flags[HEAD_N]), 1) * 1e-6, 3)}
                for w in self.workers if w.flags is not None]

    def end_chunk(self) -> None:
        """The chunk is done: the workers stop spinning (they sleep until the next chunk), this thread is unpinned."""
        for w in self.workers:
            if not w.broken:
                w.flags[REST] = 1
        cpus = self._pinned.pop(threading.get_native_id(), None)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    def close(self) -> None:
        """Stop the workers (and free their shared memory); idempotent."""
        self._finalizer()


class PendingJointStep:
    """A started :class:`SpinningHeadsStep` step: ``first`` now, the others' predictions from :meth:`rest`."""

    def __init__(self, step: SpinningHeadsStep, requests: Sequence[tuple[torch.Tensor, float, Encoding]],
                 first: torch.Tensor, posted: list[bool], rest: list[torch.Tensor] | None) -> None:
        self.first = first
        """Parent 1's prediction (what its ``predict`` returns)."""
        self._step, self._requests, self._posted, self._rest = step, requests, posted, rest

    def rest(self) -> list[torch.Tensor]:
        """Parents 2..K's predictions, in order (waits for the workers; once)."""
        if self._rest is None:
            self._rest = self._step._collect(self._requests, self._posted)
        return self._rest
