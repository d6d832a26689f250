"""Offline replay checks: one report per candidate weight vector (no robot, no ROS).

Recorded observations go through the real parents and :class:`~gpc_ros.compose.Composer`.

For each replayed chunk, starting at ``s`` (the stamps of the recorded composed chunks on ``/gpc/action_chunk`` when
the bag has them, else every ``replan_period_s``) and composed from the observation at its *decision time*
``t = s - first_action_delay_s`` (the composer's delay), every parent gets the observation a policy host answers an
encode request for ``t`` with (the host's own window code, :class:`gpc_ros.graph.host.ObservationWindow`, fed with the
recording: the last ``obs_horizon`` frames stamped at or before ``t``, each with the TCP position measured at or
before its stamp; see :func:`host_window`), the composer
samples one chunk per weight vector from the same seed (common random numbers: candidates differ only by their
weights), and per weight vector the report gives:

- **latency**: wall time of encode + compose for that chunk (s; median, 95th percentile, max);
- **envelope interventions**: what :class:`~gpc_ros.control.envelope.SafetyEnvelope` would do to the chunk:
  ``rejected_jump`` (two consecutive targets, or the first one and the previous chunk's target for ``t``, further
  apart than ``max_target_jump_m``), ``clamped_workspace`` and ``clamped_speed`` (the chunk's own steps, ``dt_s``
  apart, starting from the TCP position measured at ``s``); ``intervention_rate`` = fraction of chunks with any;
- **seam smoothness**: distance between the chunk's first target and the previous replayed chunk's target for the
  same instant (linear interpolation; the last target when it ran out) (m; mean and max);
- **error against recorded actions**: RMSE (m) between the chunk's positions and, per chunk, the recorded composed
  chunk of the same stamp (``error_source = "recorded_chunks"``) or, without recorded chunks, the measured TCP
  path at the chunk's step times ``s + i dt_s`` (``"executed_path"``); the mean over chunks is ``error_m``.

A weight vector whose numbers cross a configured threshold is listed in ``violations`` (the CLI then exits 1).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig
from gpc_ros.compose.operators import as_weight_matrix
from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.envelope import CartesianCommand, SafetyEnvelope, SafetyEnvelopeConfig

logger = logging.getLogger(__name__)

#: Orientation used for the envelope's commands when the actions carry positions only: TCP pointing down.
DEFAULT_QUATERNION_XYZW = (1.0, 0.0, 0.0, 0.0)
INTERVENTION_NAMES = ("rejected_jump", "clamped_workspace", "clamped_speed")


class ReplayError(ValueError):
    """The replay cannot run (incompatible parents and bag, nothing to replay); the message says what."""


# --- recorded streams ----------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One recorded sensor stream: frames in stamp order (``times_s`` strictly sorted)."""

    name: str
    times_s: np.ndarray
    frames: list[np.ndarray]

    def __post_init__(self) -> None:
        order = np.argsort(self.times_s, kind="stable")
        self.times_s = np.asarray(self.times_s, dtype=np.float64)[order]
        self.frames = [self.frames[i] for i in order]

    def window(self, t_s: float, n: int) -> list[np.ndarray] | None:
        """The last ``n`` frames stamped at or before ``t_s`` (oldest first), None if fewer exist."""
        end = int(np.searchsorted(self.times_s, t_s + 1e-9, side="right"))
        return self.frames[end - n:end] if end >= n else None

    def interpolate(self, t_s: np.ndarray) -> np.ndarray:
        """Linear interpolation of (vector) frames at ``t_s``; NaN outside the recorded span."""
        values = np.stack(self.frames)
        out = np.stack([np.interp(t_s, self.times_s, values[:, j], left=np.nan, right=np.nan)
                        for j in range(values.shape[1])], axis=-1)
        return out


@dataclass
class Recording:
    """What replay needs from a bag, already decoded (see :func:`gpc_ros.monitor.replay_io.load_recording`)."""

    streams: dict[str, Stream]
    """``image``, ``points``, ``state`` (the action layout: TCP position m first) — those the bag has."""
    chunks: list[ActionChunk] = field(default_factory=list)
    """Recorded composed chunks, in stamp order (may be empty)."""
    source: str = ""


# --- parents and their observations --------------------------------------------------------------------------------

Observer = Callable[[Recording, float], Any]
"""``(recording, t_s) -> observation`` for one parent, or None when the recording has no window at ``t_s``."""


def host_window(recording: Recording, observing: Any) -> Any:
    """A policy host's observation window (:class:`gpc_ros.graph.host.ObservationWindow`) holding the recording.

    Each frame is fitted exactly as the host node fits it (:func:`~gpc_ros.graph.host.fit_image`,
    :func:`~gpc_ros.graph.host.fit_cloud`); the measured TCP positions are the state.
    """
    from gpc_ros.graph.host import ObservationWindow, fit_cloud, fit_image

    stream = {"image": "image", "pointcloud": "points", "state": "state"}[observing.modality]
    frames = recording.streams[stream]
    states = recording.streams.get("state")
    size = len(frames.times_s) + (len(states.times_s) if states is not None else 0) + 1
    window = ObservationWindow(observing, size)
    if states is not None:
        for t, state in zip(states.times_s, states.frames):
            window.add_state(float(t), state)
    if observing.modality == "image":
        for t, frame in zip(frames.times_s, frames.frames):
            window.add_frame(float(t), fit_image(frame, observing.image_size))
    elif observing.modality == "pointcloud":
        for t, frame in zip(frames.times_s, frames.frames):
            window.add_frame(float(t), fit_cloud(frame, observing))
    return window


@dataclass
class ReplayParent:
    """A parent to replay and how its observation is built from the recording."""

    parent: Any
    """A :class:`~gpc_ros.compose.parent.ParentPolicy`."""
    observe: Observer
    needs: tuple[str, ...]
    """Streams of the recording it reads (``image``, ``points``, ``state``)."""

    @classmethod
    def from_host(cls, parent: Any, observing: Any) -> "ReplayParent":
        """A parent as a policy host serves it (``gpc_ros.graph.host.load_host_parent``).

        Its observation at ``t`` is what the host's window returns for an encode request naming ``t``.
        """
        needs = ({"image": ("image",), "pointcloud": ("points",), "state": ()}[observing.modality]
                 + (("state",) if observing.state_dim or observing.modality == "state" else ()))
        cache: list[Any] = [None, None]  # (recording, its window); the recording is held so it is never confused

        def observe(recording: Recording, t_s: float) -> Any:
            if cache[0] is not recording:
                cache[:] = [recording, host_window(recording, observing)]
            found = cache[1].at(t_s)
            return None if found is None else found[0]

        return cls(parent, observe, needs)

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint: str, device: str = "cpu") -> "ReplayParent":
        """A checkpoint folder, loaded and observed exactly as a policy host with ``checkpoint`` does."""
        from gpc_ros.graph.host import HostConfig, load_host_parent

        parent, observing = load_host_parent(HostConfig(name=name, checkpoint=str(checkpoint), device=device))
        return cls.from_host(parent, observing)


# --- configuration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayThresholds:
    """Limits a lab gates on (None = not checked); crossing one lists the weight vector in ``violations``."""

    max_latency_s: float | None = None
    """95th-percentile chunk latency (s)."""
    max_intervention_rate: float | None = None
    """Fraction of chunks the envelope would change or reject, in [0, 1]."""
    max_seam_jump_m: float | None = None
    """Largest seam jump (m)."""
    max_error_m: float | None = None
    """Mean RMSE against the recorded actions (m)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ReplayThresholds.{name} must be a number >= 0 or None, got {value!r}")
        if self.max_intervention_rate is not None and self.max_intervention_rate > 1:
            raise ValueError(f"ReplayThresholds.max_intervention_rate must be in [0, 1], "
                             f"got {self.max_intervention_rate!r}")


@dataclass(frozen=True)
class ReplayConfig:
    """How a recording is replayed."""

    dt_s: float = 0.1
    """Spacing of the replayed chunks' steps (s); the recorded chunks' spacing when they exist and this is None."""
    replan_period_s: float = 0.5
    """Time between decision times when the bag has no recorded composed chunks (s)."""
    first_action_delay_s: float = 0.1
    """The composer's ``first_action_delay_s``: a chunk's first action is due this long after its observation time,
    so a recorded chunk stamped ``s`` was composed from the observation at ``s - first_action_delay_s`` (s)."""
    use_recorded_chunk_times: bool = True
    """Decide at the recorded composed chunks' stamps when the bag has them."""
    max_chunks: int | None = None
    """Replay at most this many decision times (None = all)."""
    seed: int = 0
    """Chunk ``i`` is sampled with seed ``seed + i`` for every weight vector."""
    operator: str = "convex"
    sampler: SamplerConfig | None = None
    """None: DDIM on the first VP parent's schedule (flow Euler when all parents are flow), 10 steps."""
    envelope: SafetyEnvelopeConfig = field(default_factory=SafetyEnvelopeConfig)
    thresholds: ReplayThresholds = field(default_factory=ReplayThresholds)

    def __post_init__(self) -> None:
        if self.dt_s is not None and not (math.isfinite(self.dt_s) and 1e-3 <= self.dt_s <= 10.0):
            raise ValueError(f"ReplayConfig.dt_s must be in [0.001, 10] s or None, got {self.dt_s!r}")
        if not (math.isfinite(self.first_action_delay_s) and self.first_action_delay_s >= 0):
            raise ValueError(f"ReplayConfig.first_action_delay_s must be >= 0 s, got {self.first_action_delay_s!r}")
        if not (math.isfinite(self.replan_period_s) and self.replan_period_s > 0):
            raise ValueError(f"ReplayConfig.replan_period_s must be > 0 s, got {self.replan_period_s!r}")
        if self.max_chunks is not None and not (isinstance(self.max_chunks, int) and self.max_chunks >= 1):
            raise ValueError(f"ReplayConfig.max_chunks must be an int >= 1 or None, got {self.max_chunks!r}")


# --- metrics (pure functions, also used by the tests' reading of the report) ----------------------------------------


def path_at(start_s: float, dt_s: float, positions_m: np.ndarray, t_s: float) -> np.ndarray:
    """Position of a chunk path at ``t_s`` (linear between steps; first/last target outside the chunk)."""
    x = (t_s - start_s) / dt_s
    if x <= 0:
        return positions_m[0]
    i = int(math.floor(x))
    if i >= len(positions_m) - 1:
        return positions_m[-1]
    f = x - i
    return (1 - f) * positions_m[i] + f * positions_m[i + 1]


def rmse_m(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean squared Euclidean distance between the rows of ``a`` and ``b`` (first ``min(len)`` rows)."""
    n = min(len(a), len(b))
    return float(np.sqrt(np.mean(np.sum((a[:n] - b[:n]) ** 2, axis=1))))


def envelope_interventions(envelope_config: SafetyEnvelopeConfig, positions_m: np.ndarray,
                           quaternions_xyzw: np.ndarray, dt_s: float, measured_m: np.ndarray | None,
                           reference_m: np.ndarray | None) -> dict[str, int]:
    """Counts of what the envelope would do to one chunk (see the module docstring)."""
    envelope = SafetyEnvelope(envelope_config)
    chunk = ActionChunk.from_arrays(0.0, dt_s, positions_m=positions_m, quaternions_xyzw=quaternions_xyzw)
    try:
        envelope.check_chunk(chunk, reference_position_m=reference_m)
    except ChunkRejectedError:
        pass
    start = measured_m if measured_m is not None and np.all(np.isfinite(measured_m)) else positions_m[0]
    start = np.clip(start, envelope_config.lower_m, envelope_config.upper_m)
    previous = CartesianCommand(start, quaternions_xyzw[0], np.zeros(3))
    for p, q in zip(positions_m, quaternions_xyzw):
        previous = envelope.clamp_cartesian(p, q, previous, dt_s)
    counts = envelope.counter.snapshot()
    return {name: int(counts.get(name, 0)) for name in INTERVENTION_NAMES}


# --- the replay ----------------------------------------------------------------------------------------------------


def default_sampler(parents: Sequence[Any], steps: int = 10) -> SamplerConfig:
    """DDIM over the first VP parent's training timesteps, or flow Euler when no parent is a VP parent.

    The composer maps every grid level onto each parent's own time. The CLI passes the checkpoints' own schedule
    instead (:func:`gpc_ros.policies.evaluation.default_sampler`).
    """
    for p in parents:
        table = getattr(p.time_convention, "alphas_cumprod", None)
        if table is not None:
            return SamplerConfig("ddim", min(steps, len(table)), num_train_timesteps=len(table))
    return SamplerConfig("flow_euler", steps)


def decision_times(recording: Recording, parents: Sequence[ReplayParent],
                   config: ReplayConfig) -> list[tuple[float, float]]:
    """``(observation time, first action time)`` of every replayed chunk (s).

    From the recorded chunks' stamps ``s``: ``(s - first_action_delay_s, s)``; else an observation time every
    ``replan_period_s`` over the span every needed stream covers, its chunk starting ``first_action_delay_s`` later.
    """
    delay = config.first_action_delay_s
    if config.use_recorded_chunk_times and recording.chunks:
        times = [(c.start_time_s - delay, c.start_time_s) for c in recording.chunks]
    else:
        needed = {s for rp in parents for s in rp.needs}
        starts = [recording.streams[s].times_s[0] for s in needed]
        ends = [recording.streams[s].times_s[-1] for s in needed]
        first, last = max(starts), min(ends)
        obs = np.arange(first, last + 1e-9, config.replan_period_s) if last >= first else []
        times = [(float(t), float(t) + delay) for t in obs]
    return times[:config.max_chunks] if config.max_chunks else times


def _quaternions(actions: np.ndarray) -> np.ndarray:
    if actions.shape[1] >= 7:
        q = actions[:, 3:7]
        return q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.tile(np.asarray(DEFAULT_QUATERNION_XYZW, dtype=np.float64), (len(actions), 1))


def replay(recording: Recording, parents: Sequence[ReplayParent], weights: np.ndarray,
           config: ReplayConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """Replay ``recording`` for every row of ``weights`` ``(N, K)``; returns the report (a JSON-able dict)."""
    config = config or ReplayConfig()
    names = [rp.parent.name for rp in parents]
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != len(parents):
        raise ReplayError(f"each weight vector needs {len(parents)} entries (parents {names}), got "
                          f"{weights.shape[1]}")
    missing = sorted({s for rp in parents for s in rp.needs} - set(recording.streams))
    if missing:
        raise ReplayError(f"the recording has no {missing} stream(s) that parents {names} observe")
    sampler = config.sampler or default_sampler([rp.parent for rp in parents])
    composer = Composer([rp.parent for rp in parents],
                        ComposerConfig(operator=config.operator, sampler=sampler, return_parent_chunks=False))
    try:
        composer.operator.check(as_weight_matrix(weights, names), names)
    except ValueError as exc:
        raise ReplayError(f"weights {weights.tolist()} are not valid for the {config.operator} operator: {exc}") \
            from None
    dt_s = config.dt_s if config.dt_s is not None else (recording.chunks[0].dt_s if recording.chunks else 0.1)
    times = decision_times(recording, parents, config)
    chunk_by_time = {c.start_time_s: c for c in recording.chunks}
    state = recording.streams.get("state")

    observations, kept = [], []
    for t in times:
        obs = [rp.observe(recording, t[0]) for rp in parents]
        if any(o is None for o in obs):
            continue
        observations.append(obs)
        kept.append(t)
    if not kept:
        raise ReplayError(f"no decision time of {recording.source or 'the recording'} has a full observation "
                          f"window for every parent {names} (recording too short?)")
    skipped = len(times) - len(kept)

    iterator = list(enumerate(weights))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="replay weights", unit="weight")
    rows = []
    with torch.no_grad():
        for _, w in iterator:
            rows.append(_replay_weight(composer, names, w, kept, observations, chunk_by_time, state, dt_s, config))
    composer.close()
    violations = [v for row in rows for v in _violations(row, config.thresholds)]
    error_source = rows[0]["error_source"] if rows else None
    return {
        "bag": recording.source, "parents": names, "operator": config.operator,
        "sampler": asdict(sampler), "seed": config.seed, "dt_s": dt_s,
        "decision_times_s": [t for t, _ in kept], "chunk_start_times_s": [s for _, s in kept],
        "first_action_delay_s": config.first_action_delay_s, "chunks": len(kept), "skipped_decision_times": skipped,
        "error_source": error_source, "thresholds": asdict(config.thresholds),
        "envelope": {"workspace_min_m": list(config.envelope.workspace_min_m),
                     "workspace_max_m": list(config.envelope.workspace_max_m),
                     "max_speed_m_s": config.envelope.max_speed_m_s,
                     "max_target_jump_m": config.envelope.max_target_jump_m},
        "results": rows, "violations": violations,
    }


def _replay_weight(composer: Composer, names: list[str], w: np.ndarray, times: list[tuple[float, float]],
                   observations: list[list[Any]], chunk_by_time: Mapping[float, ActionChunk],
                   state: Stream | None, dt_s: float, config: ReplayConfig) -> dict[str, Any]:
    latencies, seams, errors = [], [], []
    counts = {name: 0 for name in INTERVENTION_NAMES}
    with_intervention = 0
    previous: tuple[float, np.ndarray] | None = None
    source = None
    for i, ((_, t), obs) in enumerate(zip(times, observations)):  # t: when the chunk's first action is due
        start = time.perf_counter()
        encodings = composer.encode(obs)
        out = composer.compose(encodings, w.tolist(), generator=config.seed + i)
        latencies.append(time.perf_counter() - start)
        actions = out.actions[0, 0].to(torch.float64).numpy()
        pos = actions[:, :3]
        quat = _quaternions(actions)
        measured = state.window(t, 1)[0][:3] if state is not None and state.window(t, 1) else None
        reference = path_at(previous[0], dt_s, previous[1], t) if previous is not None else None
        c = envelope_interventions(config.envelope, pos, quat, dt_s, measured, reference)
        for k, v in c.items():
            counts[k] += v
        with_intervention += int(any(c.values()))
        if previous is not None:
            seams.append(float(np.linalg.norm(pos[0] - reference)))
        recorded = chunk_by_time.get(t)
        if recorded is not None and recorded.positions_m is not None:
            errors.append(rmse_m(pos, recorded.positions_m))
            source = "recorded_chunks"
        elif state is not None:
            executed = state.interpolate(t + dt_s * np.arange(len(pos)))[:, :3]  # the TCP position (m)
            ok = np.all(np.isfinite(executed), axis=1)
            if ok.any():
                errors.append(rmse_m(pos[ok], executed[ok]))
                source = source or "executed_path"
        previous = (t, pos)
    lat = np.asarray(latencies)
    return {
        "weights": {n: float(v) for n, v in zip(names, w)},
        "latency_s": {"median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)),
                      "max": float(lat.max())},
        "interventions": counts, "chunks_with_intervention": with_intervention,
        "intervention_rate": with_intervention / len(times),
        "seam_jump_m": {"mean": float(np.mean(seams)) if seams else 0.0,
                        "max": float(np.max(seams)) if seams else 0.0},
        "error_m": float(np.mean(errors)) if errors else None, "error_source": source,
        "per_chunk": {"latency_s": [float(v) for v in lat], "seam_jump_m": seams, "error_m": errors},
    }


def _violations(row: Mapping[str, Any], th: ReplayThresholds) -> list[str]:
    label = " ".join(f"{k}={v:.2f}" for k, v in row["weights"].items())
    out = []
    if th.max_latency_s is not None and row["latency_s"]["p95"] > th.max_latency_s:
        out.append(f"{label}: latency p95 {row['latency_s']['p95']:.4f} s > max_latency_s {th.max_latency_s}")
    if th.max_intervention_rate is not None and row["intervention_rate"] > th.max_intervention_rate:
        out.append(f"{label}: intervention rate {row['intervention_rate']:.3f} > max_intervention_rate "
                   f"{th.max_intervention_rate}")
    if th.max_seam_jump_m is not None and row["seam_jump_m"]["max"] > th.max_seam_jump_m:
        out.append(f"{label}: seam jump {row['seam_jump_m']['max']:.4f} m > max_seam_jump_m {th.max_seam_jump_m}")
    if th.max_error_m is not None and row["error_m"] is not None and row["error_m"] > th.max_error_m:
        out.append(f"{label}: error {row['error_m']:.4f} m > max_error_m {th.max_error_m}")
    return out


# --- output --------------------------------------------------------------------------------------------------------


def format_table(report: Mapping[str, Any]) -> str:
    """The terminal table: one row per weight vector."""
    names = report["parents"]
    head = [f"w[{n}]" for n in names] + ["lat p50 ms", "lat p95 ms", "interv.", "rate", "seam mean mm",
                                         "seam max mm", "error mm"]
    lines = []
    for row in report["results"]:
        cells = [f"{row['weights'][n]:.2f}" for n in names]
        cells += [f"{row['latency_s']['median'] * 1e3:.1f}", f"{row['latency_s']['p95'] * 1e3:.1f}",
                  str(sum(row["interventions"].values())), f"{row['intervention_rate']:.2f}",
                  f"{row['seam_jump_m']['mean'] * 1e3:.1f}", f"{row['seam_jump_m']['max'] * 1e3:.1f}",
                  "-" if row["error_m"] is None else f"{row['error_m'] * 1e3:.1f}"]
        lines.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [f"replay of {report['bag']}: {report['chunks']} chunks, parents {', '.join(names)}, "
           f"operator {report['operator']}, error vs {report['error_source'] or 'nothing recorded'}",
           fmt.format(*head)] + [fmt.format(*r) for r in lines]
    if report["violations"]:
        out += ["thresholds crossed:"] + [f"  {v}" for v in report["violations"]]
    return "\n".join(out)


def plot_report(report: Mapping[str, Any], path: str) -> None:
    """Four panels (latency, intervention rate, seam jump, error) over the weight vectors, saved to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    labels = ["\n".join(f"{v:.2f}" for v in r["weights"].values()) for r in rows]
    x = np.arange(len(rows))
    panels = [("latency p95 (ms)", [r["latency_s"]["p95"] * 1e3 for r in rows]),
              ("intervention rate", [r["intervention_rate"] for r in rows]),
              ("seam jump max (mm)", [r["seam_jump_m"]["max"] * 1e3 for r in rows]),
              (f"error vs {report['error_source'] or '-'} (mm)",
               [np.nan if r["error_m"] is None else r["error_m"] * 1e3 for r in rows])]
    fig, axes = plt.subplots(2, 2, figsize=(max(8, 0.6 * len(rows) + 4), 7))
    for ax, (title, values) in zip(axes.ravel(), panels):
        ax.bar(x, values, color="#1f77b4")
        ax.set_title(title)
        ax.set_xticks(x, labels, fontsize=7)
    fig.suptitle(f"replay: {report['bag']} ({report['chunks']} chunks; weights of {', '.join(report['parents'])})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
