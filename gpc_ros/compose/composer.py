"""The composer: K parents + weights + operator + sampler -> one composed action chunk per candidate.

Per chunk: parents' encodings are repeated to the ``M = (N candidates [+ K one-hot rows]) * B`` rows once; then at
every grid point each parent is called ONCE on all rows (its own horizon, time and scaling, see
:mod:`gpc_ros.compose.schedule`), its prediction converted to ``(eps_i, x0_i)``
(:mod:`gpc_ros.compose.parameterization`), combined by the operator's weights position by position
(:mod:`gpc_ros.compose.operators`, :mod:`gpc_ros.compose.horizon`), and the sampler takes one step
(:mod:`gpc_ros.compose.sampler`). The K extra one-hot rows (``return_parent_chunks``) give each parent's own chunk
from the same initial noise, at the cost of K more rows in the same forward passes. All candidates start from
the same ``(B, H, D)`` noise (common random numbers: they differ only by their weights).

Each parent's prediction is converted at the noise level of the time it was actually given (after rounding or
clamping to its table, see :mod:`gpc_ros.compose.schedule`); a grid that leaves a parent's time range is logged
once per parent and counted in :attr:`Composer.stats`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch

from gpc_ros.compose.errors import (
    IncompatibleParentError,
    InvalidPredictionError,
    InvalidWeightsError,
    NonFinitePredictionError,
)
from gpc_ros.compose.horizon import WeightedSum, combine, composed_horizons, hold_tail, position_weights
from gpc_ros.compose.operators import CompositionOperator, as_weight_matrix, make_operator
from gpc_ros.compose.parameterization import Parameterization, to_eps_x0
from gpc_ros.compose.parent import (
    ActionNormalization,
    Encoding,
    JointEncode,
    JointStep,
    ParentPolicy,
    encoding_batch_size,
    is_split_phase,
    joint_encode,
    joint_step,
    repeat_encoding,
    worker_step,
)
from gpc_ros.compose.sampler import GridPoint, Sampler, SamplerConfig, make_sampler, network_calls_per_chunk
from gpc_ros.compose.schedule import NoiseLevel, ParentTime
from gpc_ros.compose.warm_start import WarmStart, WarmStartConfig, shifted_chunk, start_index

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ComposerConfig:
    """Everything that decides how parents are composed (the composer node's parameters map onto these)."""

    # --- composition
    operator: Literal["convex", "linear", "mixture"] = "convex"
    """``convex`` (GPC default) | ``linear`` (weights outside [0, 1], still summing to 1) | ``mixture`` (OR)."""
    allow_unnormalized_weights: bool = False
    """``linear`` only: accept weights not summing to 1 (extrapolation, product of experts)."""
    # --- sampling
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    dtype: Literal["float32", "float64"] = "float32"
    """Dtype of the sampled chunk and of the tensors handed to parents."""
    # --- execution and monitoring
    parallel_parents: bool | Literal["auto"] = False
    """True: call the K parents' forward passes in K threads (torch releases the GIL inside ops); False: one after
    the other; "auto": measure both per denoising step and use the faster (:class:`ParallelChooser`). Threads pay
    off for parents with big ops, or with heads traced to TorchScript (``HostConfig.trace_head``), which do not hold
    the GIL; with many small eager ops they hand the GIL over at every op and are slower than one after the other
    (docs/graph.md). Same chunk on every path. Split-phase parents
    (:class:`~gpc_ros.compose.parent.SplitPhaseParent`, proxies to remote hosts) need no threads: when every
    parent called at a step is split-phase, all are submitted from the calling thread, then collected."""
    joint_step: bool | Literal["auto"] = "auto"
    """Run all parents' denoising step in ONE call when the parents offer one together
    (:class:`~gpc_ros.compose.parent.JointStep`: in-process parents with traced heads, ``as_parent(trace_head=True)``
    / ``HostConfig.trace_head``, whose heads are then forked in one TorchScript call and run at the same time
    without the GIL). "auto": when they offer one and ``parallel_parents`` is not False; True: always (a
    :class:`~gpc_ros.compose.errors.IncompatibleParentError` when the parents offer none); False: never. Used at
    the steps where every parent is called; same chunk as every other path."""
    joint_step_workers: bool = False
    """True: the joint step runs head 1 on the calling thread and each other parent's head in a worker process of
    its own (:class:`~gpc_ros.policies.spin_worker.SpinningHeadsStep`) that busy-polls shared memory during a chunk
    and sleeps between chunks, so no thread is woken at every step (docs/graph.md, session 13). Used whenever set
    (whatever ``parallel_parents``); needs in-process parents with traced heads on the CPU (else
    :class:`~gpc_ros.compose.errors.IncompatibleParentError`; in the graph: hosts in the composer's process,
    ``deployment: in_process``, with ``trace_head: true``) and ``joint_step`` not False. Costs a process and a
    copy of the weights per extra parent and a spinning CPU during chunks; pins the workers and the calling thread
    to separate CPUs when there are as many CPUs as parents. A worker that dies or stalls is dropped (logged) and
    its steps run in process. Same chunk as every other path. False: no worker processes."""
    joint_encode: bool | Literal["auto"] = "auto"
    """Run all parents' encoders in ONE call per chunk (:meth:`Composer.encode`) when the parents offer one
    together (:class:`~gpc_ros.compose.parent.JointEncode`: in-process parents with traced heads, whose encoder
    modules are then traced and forked in one TorchScript call; each parent's Python part of ``encode`` unchanged).
    "auto": when they offer one and ``parallel_parents`` is not False (as ``joint_step``); True: always (a
    :class:`~gpc_ros.compose.errors.IncompatibleParentError` when the parents offer none); False: never. Same
    encodings as one parent after the other."""
    return_parent_chunks: bool = True
    """Also sample each parent alone from the same noise (K extra rows in the same forward passes)."""

    def __post_init__(self) -> None:
        make_operator(self.operator, self.allow_unnormalized_weights)  # validates operator + flag
        if self.dtype not in DTYPES:
            raise ValueError(f"ComposerConfig.dtype must be one of {sorted(DTYPES)}; got {self.dtype!r}")
        if not (isinstance(self.parallel_parents, bool) or self.parallel_parents == "auto"):
            raise ValueError(f"ComposerConfig.parallel_parents must be True, False or 'auto'; "
                             f"got {self.parallel_parents!r}")
        if not (isinstance(self.joint_step, bool) or self.joint_step == "auto"):
            raise ValueError(f"ComposerConfig.joint_step must be True, False or 'auto'; got {self.joint_step!r}")
        if not isinstance(self.joint_step_workers, bool):
            raise ValueError(f"ComposerConfig.joint_step_workers must be True or False; "
                             f"got {self.joint_step_workers!r}")
        if self.joint_step_workers and self.joint_step is False:
            raise ValueError("ComposerConfig.joint_step_workers=True runs the joint step, so joint_step must be True "
                             "or 'auto'; got joint_step=False")
        if not (isinstance(self.joint_encode, bool) or self.joint_encode == "auto"):
            raise ValueError(f"ComposerConfig.joint_encode must be True, False or 'auto'; got {self.joint_encode!r}")
        if not isinstance(self.sampler, SamplerConfig):
            raise ValueError(f"ComposerConfig.sampler must be a SamplerConfig; got {type(self.sampler).__name__}")
        if not isinstance(self.warm_start, WarmStartConfig):
            raise ValueError(
                f"ComposerConfig.warm_start must be a WarmStartConfig; got {type(self.warm_start).__name__}")


@dataclass(frozen=True)
class ComposedChunk:
    """Result of one :meth:`Composer.compose` call (``N`` candidates, ``B`` observations, ``H = H_max``)."""

    actions: torch.Tensor
    """``(N, B, H, D)`` composed chunks in physical units (unnormalised)."""
    actions_normalized: torch.Tensor
    """``(N, B, H, D)`` the same in the parents' shared normalised space (feed back for warm start)."""
    weights: torch.Tensor
    """``(N, K)`` the candidate weight vectors, row order of ``actions``."""
    parent_actions: dict[str, torch.Tensor]
    """Parent name -> ``(B, H_i, D)`` that parent's own chunk (physical) from the same noise; empty if disabled."""
    network_calls: int
    """Forward passes made per called parent for this chunk (all candidates together; a parent whose weight is
    zero in every row and whose own chunk is not requested is not called at all)."""
    horizons: torch.Tensor | None = None
    """``(N, B)`` composed length of each chunk: the longest horizon among the parents with non-zero weight in
    that row; positions beyond it hold the last composed action (see :mod:`gpc_ros.compose.horizon`)."""


@dataclass
class ComposerStats:
    """Counters of one :class:`Composer` (cumulative since it was built)."""

    chunks: int = 0
    """Calls of :meth:`Composer.compose` that produced a chunk."""
    out_of_range_levels: dict[str, int] = field(default_factory=dict)
    """Parent name -> grid levels located outside that parent's time range (its time clamped to the range's end);
    each distinct level is counted once, when first located."""
    parallel_steps: int = 0
    """Denoising steps whose (two or more, not split-phase) parents ran in threads."""
    sequential_steps: int = 0
    """Denoising steps whose (two or more, not split-phase) parents ran one after the other."""
    joint_steps: int = 0
    """Denoising steps whose parents ran in one joint call (``joint_step``)."""
    joint_encodes: int = 0
    """Calls of :meth:`Composer.encode` whose parents encoded in one joint call (``joint_encode``)."""


class ParallelChooser:
    """Chooses, per denoising step, whether the parents' forward passes run in threads (``"auto"``).

    Threads pay off when the forwards spend long stretches in torch ops without the GIL; with many small ops the
    threads hand the GIL over at every op and take longer than one after the other. Which holds depends on the
    parents and on the machine's load, so it is measured on ``clock``. A step's time runs from its
    :meth:`parallel_next` to the next step's, so it includes what the composer does after the forwards (where a
    pool thread going back to sleep still competes for the GIL). Steps are compared in pairs of adjacent steps of
    one chunk that took different paths (adjacent steps see about the same load; all steps of a chunk cost the
    same): the ratio ``threads / one after the other`` of each pair is kept (the last ``window``). Until ``probe``
    ratios are in, the paths alternate; then threads are used while the median ratio is below ``margin``, and
    after every ``reprobe_every`` measured steps one step takes the other path (two more pairs), so a change of
    load is noticed. ``margin`` < 1 because threads always cost more CPU time (the GIL hand-overs: +6 % to
    +100 % measured, docs/graph.md), which a shared machine pays for; they must be clearly faster.

    The composer calls :meth:`new_chunk` before each chunk. A chunk's first step (after the pause between chunks:
    cold caches, a sleeping pool thread) and its last (no next step to end it) are not measured, and no pair spans
    two chunks. Both paths give the identical chunk; only the time differs.
    """

    def __init__(self, probe: int = 5, window: int = 9, reprobe_every: int = 40, margin: float = 0.9,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not (probe >= 1 and window >= probe and reprobe_every >= 2 and 0.0 < margin <= 1.0):
            raise ValueError(f"ParallelChooser needs probe >= 1, window >= probe, reprobe_every >= 2 and margin in "
                             f"(0, 1]; got probe={probe}, window={window}, reprobe_every={reprobe_every}, "
                             f"margin={margin}")
        self.probe, self.reprobe_every, self.margin, self.clock = probe, reprobe_every, margin, clock
        self.ratios: deque[float] = deque(maxlen=window)
        """``threads / one after the other`` step time of recent adjacent pairs."""
        self._steps: int | None = None  # steps of the running chunk (None: unknown, one endless chunk)
        self._index = -1  # index of the running step in its chunk
        self._open: tuple[bool, float] | None = None  # the running step's path and start, if it is measured
        self._last: bool | None = None  # the previous step's path
        self._measured: tuple[int, bool, float] | None = None  # the last measured step: index, path, seconds
        self._since_reprobe = 0

    def new_chunk(self, steps: int | None = None) -> None:
        """A chunk of ``steps`` denoising steps begins (see the class docstring)."""
        self._steps, self._index, self._open, self._measured = steps, -1, None, None

    def parallel_next(self) -> bool:
        """Whether the next step runs the parents in threads (also ends the previous step's measurement)."""
        now = self.clock()
        self._index += 1
        if self._open is not None:
            self._record(self._index - 1, self._open[0], now - self._open[1])
        if len(self.ratios) < self.probe:
            parallel = self._last is None or not self._last  # alternate, threads first
        else:
            parallel = bool(self.faster())
            last_possible = self._steps is None or self._index <= self._steps - 3  # both pairs inside the chunk
            if self._since_reprobe >= self.reprobe_every and self._index >= 1 and last_possible:
                parallel, self._since_reprobe = not parallel, 0
        self._open = (parallel, now) if self._index >= 1 else None  # a chunk's first step is not measured
        self._last = parallel
        return parallel

    def faster(self) -> bool | None:
        """True if threads are clearly faster (median ratio < ``margin``), else False; None before any pair."""
        return statistics.median(self.ratios) < self.margin if self.ratios else None

    def _record(self, index: int, parallel: bool, seconds: float) -> None:
        """Step ``index`` of this chunk took ``seconds`` on path ``parallel``; a ratio if its predecessor differs."""
        self._since_reprobe += 1
        previous, self._measured = self._measured, (index, parallel, seconds)
        if previous is None or previous[0] != index - 1 or previous[1] == parallel:
            return
        threads, sequential = (seconds, previous[2]) if parallel else (previous[2], seconds)
        if sequential > 0.0:
            self.ratios.append(threads / sequential)


class Composer:
    """Composes parents that share an action space; one object per set of parents."""

    def __init__(self, parents: Sequence[ParentPolicy], config: ComposerConfig | None = None,
                 sampler: Sampler | None = None) -> None:
        self.config = config or ComposerConfig()
        self.parents = list(parents)
        self._check_parents()
        self.operator: CompositionOperator = make_operator(self.config.operator, self.config.allow_unnormalized_weights)
        self.sampler = sampler or make_sampler(self.config.sampler)
        self.normalization: ActionNormalization = self.parents[0].normalization
        if self.sampler.clip_sample is None:  # "auto": clip only where the normalised space is bounded
            self.sampler.set_clip_sample(self.normalization.kind == "min_max")
        elif self.sampler.clip_sample and self.normalization.kind != "min_max":
            logger.warning("clip_sample=True clips x0 to [-1, 1] although the parents normalise actions with %r "
                           "(unbounded); the composed chunk is distorted where |x0| > 1", self.normalization.kind)
        if self.sampler.uses_x0 and self.sampler.points[0].level.alpha <= 0.0:
            for p in self.parents:
                if Parameterization.parse(p.parameterization) is Parameterization.EPSILON:
                    raise IncompatibleParentError(
                        f"parent {p.name!r} predicts epsilon, which does not determine x0 at the grid's first point "
                        f"(pure noise, alpha = 0) that a flow sampler needs; set SamplerConfig.flow_t_start < 1 "
                        f"(e.g. 0.999)", parent=p.name)
        self.dtype = DTYPES[self.config.dtype]
        self.horizon = max(p.action_horizon for p in self.parents)
        self.action_dim = self.parents[0].action_dim
        self.stats = ComposerStats()
        self._parameterizations = [Parameterization.parse(p.parameterization) for p in self.parents]
        self._where: dict[tuple[int, NoiseLevel], ParentTime] = {}  # parent time per grid level (fixed grids)
        self._pool = (ThreadPoolExecutor(len(self.parents), thread_name_prefix="gpc-parent")
                      if self.config.parallel_parents else None)  # True or "auto"
        self.chooser = ParallelChooser() if self.config.parallel_parents == "auto" else None
        self._split_phase = [is_split_phase(p) for p in self.parents]
        self._joint: JointStep | None = (self._offered("joint_step_workers", worker_step)
                                         if self.config.joint_step_workers else self._offered("joint_step", joint_step))
        self._joint_encode: JointEncode | None = self._offered("joint_encode", joint_encode)

    def _offered(self, field: str, offer: Callable[[Sequence[object]], object]):
        """What the parents offer together for ``ComposerConfig.<field>``, or None.

        "auto": when ``parallel_parents`` is not False; True with parents that offer nothing raises
        :class:`IncompatibleParentError`.
        """
        setting = getattr(self.config, field)
        if not (setting is True or (setting == "auto" and self.config.parallel_parents)):
            return None
        found = offer(self.parents)
        if found is None and setting is True:
            what = "joint step in worker processes" if field == "joint_step_workers" else field.replace("_", " ")
            other = "False" if field == "joint_step_workers" else "'auto' or False"
            raise IncompatibleParentError(
                f"ComposerConfig.{field}=True needs two or more parents that offer a {what} together "
                f"(in-process parents with traced heads: as_parent(trace_head=True)); parents {self.names} "
                f"({', '.join(type(p).__name__ for p in self.parents)}) offer none; use {other}")
        return found

    @property
    def joint_encoder(self) -> JointEncode | None:
        """The parents' joint encode this composer uses (``ComposerConfig.joint_encode``), or None."""
        return self._joint_encode

    # ------------------------------------------------------------------ validation
    @property
    def names(self) -> list[str]:
        """The parents' names, in order."""
        return [p.name for p in self.parents]

    def _check_parents(self) -> None:
        if len(self.parents) < 1:
            raise IncompatibleParentError("Composer needs at least one parent")
        seen: set[str] = set()
        first = self.parents[0]
        for p in self.parents:
            name = getattr(p, "name", None)
            if not isinstance(name, str) or not name:
                raise IncompatibleParentError(f"every parent needs a non-empty str name; got {name!r} ({p!r})")
            if name in seen:
                raise IncompatibleParentError(f"two parents are named {name!r}; names must be unique", parent=name)
            seen.add(name)
            try:
                Parameterization.parse(p.parameterization, field=f"parent {name!r} parameterization")
            except ValueError as err:
                raise IncompatibleParentError(str(err), parent=name) from None
            for attr in ("action_horizon", "action_dim"):
                value = getattr(p, attr)
                if not (isinstance(value, int) and value >= 1):
                    raise IncompatibleParentError(f"parent {name!r}: {attr} must be an int >= 1; got {value!r}",
                                                  parent=name)
            convention = getattr(p, "time_convention", None)
            if not (hasattr(convention, "locate") and hasattr(convention, "noise_level")):
                raise IncompatibleParentError(
                    f"parent {name!r}: time_convention must be a TimeConvention (VPTime, FlowTime); got {convention!r}",
                    parent=name)
            parameterization = Parameterization.parse(p.parameterization)
            if parameterization.needs_flow_time:
                probe = convention.locate(NoiseLevel(0.6, 0.8)).level  # any level off the flow line alpha + sigma = 1
                if abs(probe.alpha + probe.sigma - 1.0) > 1e-9:
                    raise IncompatibleParentError(
                        f"parent {name!r} predicts {parameterization.value!r}, which is defined only on a "
                        f"rectified-flow time (alpha + sigma = 1, FlowTime); its time_convention "
                        f"{type(convention).__name__} puts it at alpha + sigma = {probe.alpha + probe.sigma:.4g}",
                        parent=name)
            if p.action_dim != first.action_dim:
                raise IncompatibleParentError(
                    f"parent {name!r} has action_dim {p.action_dim} but parent {first.name!r} has "
                    f"{first.action_dim}; all parents must act in the same action space", parent=name)
            norm = p.normalization
            if norm.dim is not None and norm.dim != p.action_dim:
                raise IncompatibleParentError(
                    f"parent {name!r}: normalization stats have {norm.dim} dims, action_dim is {p.action_dim}",
                    parent=name)
            if not norm.matches(first.normalization):
                raise IncompatibleParentError(
                    f"parent {name!r} normalises actions differently from parent {first.name!r} "
                    f"({norm} vs {first.normalization}); compose only parents trained with the same "
                    f"normalisation stats (noise added in different normalised spaces is not the same noise)",
                    parent=name)

    # ------------------------------------------------------------------ sampling
    def encode(self, observations: Sequence[object]) -> list[Encoding]:
        """One observation per parent (same order) -> their encodings (in one call with ``joint_encode``)."""
        if len(observations) != len(self.parents):
            raise ValueError(f"encode needs {len(self.parents)} observations (one per parent {self.names}); "
                             f"got {len(observations)}")
        if self._joint_encode is not None:  # every parent's encoder in one call
            self.stats.joint_encodes += 1
            return self._joint_encode(list(observations))
        return [p.encode(o) for p, o in zip(self.parents, observations)]

    def compose(self, encodings: Sequence[Encoding], weights: object,
                generator: torch.Generator | int | None = None, warm_start: WarmStart | None = None,
                noise: torch.Tensor | None = None) -> ComposedChunk:
        """Sample composed chunks for every candidate weight vector.

        ``encodings``: one per parent, each batch-first with the same ``B``; ``weights``: ``(K,)`` or ``(N, K)``;
        ``generator``: a ``torch.Generator`` or an int seed (same seed and inputs -> identical chunk);
        ``warm_start``: start from the previous chunk (see :mod:`gpc_ros.compose.warm_start`);
        ``noise``: optional standard normal ``(B, H, D)`` noise instead of drawing it (shared by all candidates; scaled
        to the grid's first point exactly like drawn noise).
        """
        names = self.names
        if len(encodings) != len(self.parents):
            raise ValueError(f"compose needs {len(self.parents)} encodings (one per parent {names}); "
                             f"got {len(encodings)}")
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        w = as_weight_matrix(weights, names)
        self.operator.check(w, names)
        batch = encoding_batch_size(encodings[0])
        for p, enc in zip(self.parents, encodings):
            if encoding_batch_size(enc) != batch:
                raise ValueError(f"encoding of parent {p.name!r} has batch size {encoding_batch_size(enc)}, "
                                 f"parent {names[0]!r} has {batch}")
        n_candidates = w.shape[0]
        k = len(self.parents)
        rows = torch.cat([w, torch.eye(k, dtype=w.dtype)]) if self.config.return_parent_chunks else w
        row_w = self.operator.row_weights(rows, batch, generator)
        pos_w = position_weights(row_w, [p.action_horizon for p in self.parents]).to(self.dtype)
        repeated = [repeat_encoding(enc, rows.shape[0]) for enc in encodings]
        active = [bool(pos_w[:, i].abs().max() > 0) for i in range(k)]

        x, first = self._initial_chunk(batch, generator, warm_start, noise)
        x = x.repeat(rows.shape[0], 1, 1)  # (M, H, D), row i * B + b: every row block starts from the same noise

        def denoise(x_t: torch.Tensor, point: GridPoint) -> tuple[torch.Tensor, torch.Tensor]:
            return self.denoise(x_t, point, repeated, pos_w, active)

        if self.chooser is not None:
            self.chooser.new_chunk(network_calls_per_chunk(self.sampler, first))
        if self._joint is not None:
            self._joint.new_chunk()

        try:
            x = self.sampler.run(x, denoise, generator, start_index=first)
        finally:
            end_chunk = getattr(self._joint, "end_chunk", None)
            if callable(end_chunk):
                end_chunk()
        lengths = composed_horizons(row_w, [p.action_horizon for p in self.parents])  # (M,)
        x = hold_tail(x, lengths)
        out = x.reshape(rows.shape[0], batch, self.horizon, self.action_dim)
        physical = self.normalization.unnormalize(out)
        parent_actions = {}
        if self.config.return_parent_chunks:
            parent_actions = {p.name: physical[n_candidates + i, :, :p.action_horizon]
                              for i, p in enumerate(self.parents)}
        calls = network_calls_per_chunk(self.sampler, first)
        logger.debug("composed %d candidate(s) x %d obs with %d parent(s), %d calls each",
                     n_candidates, batch, k, calls)
        self.stats.chunks += 1
        horizons = lengths.reshape(rows.shape[0], batch)[:n_candidates]
        return ComposedChunk(physical[:n_candidates], out[:n_candidates], w, parent_actions, calls, horizons)

    def _initial_chunk(self, batch: int, generator: torch.Generator | None, warm_start: WarmStart | None,
                       noise: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """``(B, H, D)`` starting chunk and the grid index it sits at.

        Common random numbers: all candidates (and parent-alone rows) start from this same chunk, so they differ
        only by their weights (DDPM / DDIM-eta step noise is drawn per row).
        """
        shape = (batch, self.horizon, self.action_dim)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape (B, H, D) = {shape}; got {tuple(noise.shape)}")
        if warm_start is None:
            return self.sampler.initial(shape, generator, self.dtype, noise=noise), 0
        prev = warm_start.previous_normalized.to(self.dtype)
        if tuple(prev.shape) != shape:
            raise ValueError(f"WarmStart.previous_normalized must be (B, H, D) = {shape}; got {tuple(prev.shape)}")
        first = start_index(len(self.sampler.points), self.config.warm_start.remaining_fraction)
        x0 = shifted_chunk(prev, warm_start.executed_steps, self.config.warm_start.pad)
        fresh = noise if noise is not None else torch.randn(shape, generator=generator, dtype=self.dtype)
        return self.sampler.renoise(x0, fresh.to(self.dtype), first), first

    def denoise(self, x: torch.Tensor, point: GridPoint, encodings: Sequence[Encoding],
                weights: torch.Tensor, active: Sequence[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Composed ``(eps_hat, x0_hat)`` of ``x`` ``(M, H_max, D)`` at ``point``.

        ``weights`` ``(M, K, H_max)``, ``encodings`` already repeated to ``M`` rows. Parents whose weight is zero
        everywhere (``active``) are not called. When every called parent is split-phase, all their steps are
        submitted first, then collected in parent order (the first failure raises, as on the other paths).
        """
        active = active if active is not None else [True] * len(self.parents)
        jobs = [i for i, on in enumerate(active) if on]
        with_x0 = self.operator.weights_sum_to_one and (self.sampler.uses_x0 or point.level.alpha <= 0.0)
        if self._joint is not None and len(jobs) == len(self.parents):  # every parent's step in one call
            inputs = [self._parent_input(i, x, point) for i in jobs]
            requests = [(x_in, where.value, encodings[i]) for i, (where, x_in) in zip(jobs, inputs)]
            start = getattr(self._joint, "start", None)
            if start is None:
                predictions = self._joint(requests)
                results = {i: self._convert(i, predictions[i], *inputs[i], point, x.dtype, with_x0) for i in jobs}
            else:  # the first parent's prediction is converted and weighted while the others' are still being made
                pending = start(requests)
                finite = getattr(pending, "finite", ())  # predictions the joint step already found finite
                first = self._convert(0, pending.first, *inputs[0], point, x.dtype, with_x0, finite[:1] == [True])
                horizons = [x_in.shape[1] for _, x_in in inputs]
                sums = [WeightedSum(weights, horizons) for _ in range(2 if with_x0 else 1)]
                for total, part in zip(sums, first):
                    total.add(part)
                rest = pending.rest()
                finite = getattr(pending, "finite", ())
                for i, prediction in zip(jobs[1:], rest):
                    checked = len(finite) > i and finite[i] is True
                    for total, part in zip(sums, self._convert(i, prediction, *inputs[i], point, x.dtype, with_x0,
                                                               checked)):
                        total.add(part)
                results = None
            self.stats.joint_steps += 1
        elif len(jobs) > 1 and all(self._split_phase[i] for i in jobs):  # send every request, then wait for all
            inputs = {i: self._parent_input(i, x, point) for i in jobs}
            pending = {i: self.parents[i].submit(x_in, where.value, encodings[i])
                       for i, (where, x_in) in inputs.items()}
            results = {i: self._convert(i, pending[i].result(), *inputs[i], point, x.dtype, with_x0) for i in jobs}
        elif self._pool is not None and len(jobs) > 1:
            parallel = self.chooser.parallel_next() if self.chooser is not None else True
            if parallel:  # first parent on this thread, the others on the pool
                futures = {i: self._pool.submit(self._predict, i, x, point, encodings[i], with_x0) for i in jobs[1:]}
                results = {jobs[0]: self._predict(jobs[0], x, point, encodings[jobs[0]], with_x0)}
                results.update({i: future.result() for i, future in futures.items()})
                self.stats.parallel_steps += 1
            else:
                results = {i: self._predict(i, x, point, encodings[i], with_x0) for i in jobs}
                self.stats.sequential_steps += 1
        else:
            if len(jobs) > 1:
                self.stats.sequential_steps += 1
            results = {i: self._predict(i, x, point, encodings[i], with_x0) for i in jobs}
        if results is None:  # summed as they came
            eps_hat = sums[0].out
            if with_x0:
                return eps_hat, sums[1].out
        else:
            zeros = torch.zeros_like(x)
            eps_hat = combine([results[i][0] if i in results else zeros for i in range(len(self.parents))], weights)
            if with_x0:
                return eps_hat, combine([results[i][1] if i in results else zeros for i in range(len(self.parents))],
                                        weights)
        # Unnormalised weights: eps (the score) is the combined quantity; x0 follows from x = alpha x0 + sigma eps
        # (for weights summing to 1 this IS the combined x0; samplers that only read eps_hat take this cheap path).
        if point.level.alpha <= 0.0:
            raise InvalidWeightsError(
                "weights not summing to 1 need a grid with alpha > 0 at every point (flow_t_start < 1)")
        return to_eps_x0(Parameterization.EPSILON, eps_hat, x, point.level.alpha, point.level.sigma)

    def _predict(self, i: int, x: torch.Tensor, point: GridPoint, encoding: Encoding, with_x0: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Parent ``i``'s ``(eps_i, x0_i)`` on its own horizon, time and scaling."""
        where, x_in = self._parent_input(i, x, point)
        prediction = self.parents[i].predict(x_in, where.value, encoding)
        return self._convert(i, prediction, where, x_in, point, x.dtype, with_x0)

    def _parent_input(self, i: int, x: torch.Tensor, point: GridPoint) -> tuple[ParentTime, torch.Tensor]:
        """Parent ``i``'s time for ``point`` and ``x`` on its horizon, rescaled into its convention."""
        parent = self.parents[i]
        where = self._where.get((i, point.level))
        if where is None:
            where = self._where.setdefault((i, point.level), self._locate(parent, point))
        x_in = x[:, :parent.action_horizon]
        if where.x_scale != 1.0:
            x_in = x_in * where.x_scale
        return where, x_in

    def _convert(self, i: int, prediction: object, where: ParentTime, x_in: torch.Tensor, point: GridPoint,
                 dtype: torch.dtype, with_x0: bool, finite_checked: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Parent ``i``'s checked ``prediction`` for ``x_in`` -> ``(eps_i, x0_i)`` at ``where``'s level.

        ``finite_checked``: the joint step already found this very tensor free of NaN / inf (a graph host's own
        check, ``PendingJointStep.finite``), so it is not checked again.
        """
        parent = self.parents[i]
        if not isinstance(prediction, torch.Tensor):
            raise InvalidPredictionError(
                f"parent {parent.name!r} returned a {type(prediction).__module__}.{type(prediction).__name__} at step "
                f"{point.index} (its time {where.value:.6g}); predict must return a torch.Tensor of shape "
                f"{tuple(x_in.shape)}", parent=parent.name)
        if tuple(prediction.shape) != tuple(x_in.shape):
            raise InvalidPredictionError(
                f"parent {parent.name!r} returned a prediction of shape {tuple(prediction.shape)} at step "
                f"{point.index} (its time {where.value:.6g}); expected {tuple(x_in.shape)}", parent=parent.name)
        if not finite_checked and not bool(torch.isfinite(prediction).all()):
            bad = int((~torch.isfinite(prediction)).sum())
            raise NonFinitePredictionError(
                f"parent {parent.name!r} returned {bad} NaN/inf value(s) at step {point.index} "
                f"(its time {where.value:.6g}); no chunk was produced", parent=parent.name)
        prediction = prediction.to(dtype)
        return to_eps_x0(self._parameterizations[i], prediction, x_in, where.level.alpha, where.level.sigma,
                         with_x0)

    def _locate(self, parent: ParentPolicy, point: GridPoint) -> ParentTime:
        """The parent's time for ``point``; a level outside its range is logged once and counted."""
        where = parent.time_convention.locate(point.level)
        if where.clamped:
            count = self.stats.out_of_range_levels.get(parent.name, 0)
            if count == 0:
                logger.warning(
                    "the composer's grid leaves the time range of parent %r at step %d (log-SNR %.3g): its time is "
                    "clamped to %.6g and its prediction converted at that time's noise level; later occurrences "
                    "are only counted (Composer.stats.out_of_range_levels)", parent.name, point.index,
                    point.level.log_snr, where.value)
            self.stats.out_of_range_levels[parent.name] = count + 1
        return where

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the parent threads (if ``parallel_parents``) and the joint step's workers (``joint_step_workers``)."""
        close = getattr(self._joint, "close", None)
        if callable(close):
            close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Composer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
