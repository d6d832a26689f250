"""Chunk timing: latency compensation (drop past-due steps) and blending at the seam between chunks.

A policy's chunk is computed from an observation taken some time ago; by the time it arrives its first steps are
already due. Like diffusion_policy's real-robot loop, steps due before ``now + lookahead_s`` are dropped. The
remaining steps meet the chunk being executed at a *seam*; :class:`SeamBlender` turns the plan (the chunks
received so far) and the new chunk into the new plan, one of:

- ``replace``: the new chunk wins from its first remaining step on;
- ``crossfade``: over the first ``crossfade_steps`` steps the target moves linearly from the old plan's value at
  that time to the new chunk's value (``alpha_j = (j + 1) / (k + 1)``), then the new chunk alone;
- ``ensemble``: temporal ensembling (ACT): each step is the average of every recent chunk's prediction for that
  time, with weights ``exp(-ensemble_decay * i)``, ``i = 0`` for the oldest prediction.

Positions, joint targets and gripper widths blend linearly; quaternions by normalised weighted sums with signs
aligned to the first (nlerp), which is exact for the small angles between consecutive predictions.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gpc_ros.control.chunk import MAX_CHUNK_STEPS, ActionChunk, ChunkRejectedError

logger = logging.getLogger(__name__)

BlendMode = Literal["replace", "crossfade", "ensemble"]
BLEND_MODES: tuple[str, ...] = ("replace", "crossfade", "ensemble")


@dataclass(frozen=True)
class TimingConfig:
    """How chunks are trimmed and joined."""

    lookahead_s: float = 0.0
    """Steps due before ``now + lookahead_s`` are dropped on arrival (s, >= 0): the command latency to absorb."""
    blend_mode: BlendMode = "crossfade"
    """Seam blending: ``replace``, ``crossfade`` or ``ensemble`` (see module docstring)."""
    crossfade_steps: int = 4
    """Steps over which ``crossfade`` moves from the old plan to the new chunk (>= 1)."""
    ensemble_decay: float = 0.1
    """``m`` in the ensembling weights ``exp(-m * i)`` (>= 0; 0 = plain average; larger favours older chunks)."""
    ensemble_history: int = 8
    """How many recent chunks ``ensemble`` averages at most (>= 1)."""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lookahead_s) and self.lookahead_s >= 0.0):
            raise ValueError(f"TimingConfig.lookahead_s must be a finite number >= 0 s, got {self.lookahead_s!r}")
        if self.blend_mode not in BLEND_MODES:
            raise ValueError(f"TimingConfig.blend_mode must be one of {BLEND_MODES}, got {self.blend_mode!r}")
        if int(self.crossfade_steps) != self.crossfade_steps or self.crossfade_steps < 1:
            raise ValueError(f"TimingConfig.crossfade_steps must be an integer >= 1, got {self.crossfade_steps!r}")
        if not (np.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0.0):
            raise ValueError(f"TimingConfig.ensemble_decay must be a finite number >= 0, got {self.ensemble_decay!r}")
        if int(self.ensemble_history) != self.ensemble_history or self.ensemble_history < 1:
            raise ValueError(f"TimingConfig.ensemble_history must be an integer >= 1, got {self.ensemble_history!r}")


def drop_past_due(chunk: ActionChunk, now_s: float, lookahead_s: float = 0.0) -> ActionChunk | None:
    """The chunk without the steps due before ``now_s + lookahead_s``; None if every step is past due."""
    first = int(np.searchsorted(chunk.times_s, now_s + lookahead_s - 1e-9, side="left"))
    if first >= chunk.n_steps:
        return None
    return chunk if first == 0 else chunk.tail(first)


@dataclass(frozen=True)
class TimedTarget:
    """A chunk's target at one instant (interpolated between steps; held before the first / after the last)."""

    position_m: np.ndarray | None
    """(3,) end-effector position in fr3_link0 (m), Cartesian chunks."""
    quaternion_xyzw: np.ndarray | None
    """(4,) unit quaternion x, y, z, w, Cartesian chunks."""
    joint_positions_rad: np.ndarray | None
    """(7,) joint targets (rad), joint chunks."""
    gripper_width_m: float | None
    """Gripper width (m) if the chunk carries one."""


def _interp_rows(values: np.ndarray, s: float) -> np.ndarray:
    if not s > 0.0:  # also NaN
        return np.array(values[0])
    if s >= len(values) - 1:
        return np.array(values[-1])
    i = int(np.floor(s))
    frac = s - i
    return (1.0 - frac) * values[i] + frac * values[i + 1]


def sample(chunk: ActionChunk, t_s: float) -> TimedTarget:
    """The chunk's target at time ``t_s`` (linear in position/joints/gripper, nlerp in orientation)."""
    s = (t_s - chunk.start_time_s) / chunk.dt_s
    quat = None
    if chunk.quaternions_xyzw is not None:
        quat = _interp_rows(chunk.quaternions_xyzw, s)
        quat /= np.linalg.norm(quat)
    return TimedTarget(
        position_m=None if chunk.positions_m is None else _interp_rows(chunk.positions_m, s),
        quaternion_xyzw=quat,
        joint_positions_rad=None if chunk.joint_positions_rad is None else _interp_rows(chunk.joint_positions_rad, s),
        gripper_width_m=None if chunk.gripper_width_m is None else float(_interp_rows(chunk.gripper_width_m, s)),
    )


def _sample_at(chunk: ActionChunk, times_s: np.ndarray) -> dict[str, np.ndarray | None]:
    rows = [sample(chunk, float(t)) for t in times_s]
    out: dict[str, np.ndarray | None] = {}
    for key, attr in (("positions_m", "position_m"), ("quaternions_xyzw", "quaternion_xyzw"),
                      ("joint_positions_rad", "joint_positions_rad"), ("gripper_width_m", "gripper_width_m")):
        vals = [getattr(r, attr) for r in rows]
        out[key] = None if vals[0] is None else np.array(vals, dtype=np.float64)
    return out


def _weighted(values: list[np.ndarray], weights: np.ndarray, quaternion: bool) -> np.ndarray:
    """Weighted sum over predictions (rows aligned); quaternions sign-aligned to the first, then renormalised."""
    stack = np.stack(values)  # (P, N, D) or (P, N)
    if quaternion:
        signs = np.sign(np.einsum("pnd,nd->pn", stack, stack[0]))
        signs[signs == 0] = 1.0
        stack = stack * signs[..., None]
    w = weights / weights.sum(axis=0, keepdims=True)  # (P, N)
    out = np.einsum("pn,pn...->n...", w, stack)
    if quaternion:
        out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class SeamBlender:
    """Joins each new chunk to the plan being executed; :attr:`plan` is what the executor follows."""

    def __init__(self, config: TimingConfig) -> None:
        self.config = config
        self._history: deque[ActionChunk] = deque(maxlen=config.ensemble_history)
        self.plan: ActionChunk | None = None

    def reset(self) -> None:
        """Forget every chunk (after a stop or a fault, a new chunk starts a new plan)."""
        self._history.clear()
        self.plan = None

    def add(self, chunk: ActionChunk, now_s: float) -> ActionChunk | None:
        """Trim ``chunk`` to what is still due at ``now_s`` (s) and blend it into the plan.

        Returns:
            The new plan; None if every step was past due (the plan is then unchanged).

        Raises:
            ChunkRejectedError: the chunk switches between Cartesian and joint targets while a plan runs.
        """
        trimmed = drop_past_due(chunk, now_s, self.config.lookahead_s)
        if trimmed is None:
            logger.debug("chunk %r entirely past due at %.3f s: dropped", chunk, now_s)
            return None
        old = self.plan
        if old is not None and old.is_cartesian != trimmed.is_cartesian:
            raise ChunkRejectedError("a chunk cannot switch between Cartesian and joint targets while a plan of the "
                                     "other kind runs: stop first")
        if old is not None and (old.gripper_width_m is None) != (trimmed.gripper_width_m is None):
            old = None  # gripper presence changed: nothing meaningful to blend with
        mode = self.config.blend_mode
        if old is None or mode == "replace" or old.end_time_s < trimmed.start_time_s:
            new_plan = trimmed
        elif mode == "crossfade":
            new_plan = self._crossfade(old, trimmed)
        else:
            new_plan = self._ensemble(trimmed)
        self._history.append(trimmed)
        if old is not None and old.start_time_s - 1e-9 <= new_plan.start_time_s - new_plan.dt_s <= old.end_time_s \
                and new_plan.start_time_s > now_s and new_plan.n_steps < MAX_CHUNK_STEPS:
            new_plan = self._lead_in(old, new_plan)
        self.plan = new_plan
        return new_plan

    @staticmethod
    def _lead_in(old: ActionChunk, plan: ActionChunk) -> ActionChunk:
        """``plan`` with one step before its first: the old plan's value then, so that the plan covers ``now``.

        A chunk trimmed to its steps due from now on starts up to one step *after* now; sampled before its first step,
        the plan would hold that step (a target up to ``dt_s`` ahead in time) with zero slope: measured on franky-sim,
        once per 10 Hz chunk the streamed motion had no feed-forward velocity and braked towards its target
        (test_streamed_chunks_move_without_stop_and_go). The old plan is what was in effect until then.
        """
        t = plan.start_time_s - plan.dt_s
        before = sample(old, t)
        fields: dict[str, np.ndarray | None] = {}
        for key, attr in (("positions_m", "position_m"), ("quaternions_xyzw", "quaternion_xyzw"),
                          ("joint_positions_rad", "joint_positions_rad"), ("gripper_width_m", "gripper_width_m")):
            rows = getattr(plan, key)
            value = getattr(before, attr)
            if rows is None or value is None:
                fields[key] = None if rows is None else np.concatenate([rows[:1], rows])
                continue
            value = np.asarray(value, dtype=np.float64)
            if key == "quaternions_xyzw" and float(value @ rows[0]) < 0.0:
                value = -value
            fields[key] = np.concatenate([value[None] if value.ndim else value.reshape(1), rows])
        return ActionChunk(t, plan.dt_s, **fields)

    def _crossfade(self, old: ActionChunk, new: ActionChunk) -> ActionChunk:
        k = min(int(self.config.crossfade_steps), new.n_steps)
        times = new.times_s
        old_vals = _sample_at(old, times[:k])
        covered = times[:k] <= old.end_time_s + 1e-9
        alpha = np.where(covered, (np.arange(k) + 1.0) / (k + 1.0), 1.0)
        fields: dict[str, np.ndarray | None] = {}
        for key in ("positions_m", "quaternions_xyzw", "joint_positions_rad", "gripper_width_m"):
            new_arr = getattr(new, key)
            if new_arr is None:
                fields[key] = None
                continue
            head = _weighted([old_vals[key], np.array(new_arr[:k])],
                             np.stack([1.0 - alpha, alpha]), quaternion=key == "quaternions_xyzw")
            fields[key] = np.concatenate([head, new_arr[k:]], axis=0)
        return ActionChunk(new.start_time_s, new.dt_s, **fields)

    def _ensemble(self, new: ActionChunk) -> ActionChunk:
        times = new.times_s
        chunks = [c for c in self._history if c.end_time_s >= times[0] and c.is_cartesian == new.is_cartesian
                  and (c.gripper_width_m is None) == (new.gripper_width_m is None)] + [new]
        samples = [_sample_at(c, times) for c in chunks]
        # Rank i = 0 for the oldest chunk; a chunk contributes only where it covers the time.
        ranks = np.cumsum(np.array([[c.start_time_s - 1e-9 <= t <= c.end_time_s + 1e-9 for t in times]
                                    for c in chunks], dtype=np.float64), axis=0) - 1.0
        covers = np.array([[c.start_time_s - 1e-9 <= t <= c.end_time_s + 1e-9 for t in times] for c in chunks])
        weights = np.where(covers, np.exp(-self.config.ensemble_decay * np.maximum(ranks, 0.0)), 0.0)
        fields: dict[str, np.ndarray | None] = {}
        for key in ("positions_m", "quaternions_xyzw", "joint_positions_rad", "gripper_width_m"):
            if getattr(new, key) is None:
                fields[key] = None
                continue
            fields[key] = _weighted([s[key] for s in samples], weights, quaternion=key == "quaternions_xyzw")
        return ActionChunk(new.start_time_s, new.dt_s, **fields)
