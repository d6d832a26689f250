"""Benchmark episodes through the real path.

Sim cameras -> the nodes' perception -> parents through the Composer -> FrankaExecutor -> franky -> franky-sim.

:class:`ComposedPolicy` is a :class:`gpc_ros.sim.cell.Policy`: it keeps the observation history of the episode,
builds each parent's observation window (``T_obs`` frames of its keys, the first frame repeated at the start, as in
training), encodes once per chunk, samples ONE composed chunk for the arm's weights with the
:class:`~gpc_ros.compose.Composer` and re-plans every ``replan_every`` steps (Diffusion Policy's ``n_action_steps``;
in between it hands the executor the rest of the current chunk, re-timed to the current observation). The initial
noise of the chunk planned at step ``k`` of the episode with layout seed ``s`` is drawn from a generator seeded
with ``(s, k)``: every arm sees the same noise at the same step (common random numbers), and a parent alone gets
the same noise as its endpoint of a grid.

:class:`SimBackend` owns one :class:`~gpc_ros.sim.cell.SimCell` (one franky-sim server reset between episodes) and
runs ``(arm, seed)`` episodes, returning the row stored in the results file. As on the robot, a chunk the
driver's safety envelope rejects (a jump) is not executed and the previous plan continues; the episode goes on, the
policy plans again at the next step, and the row counts ``chunks_rejected``. A failure of the simulator or of its
link (:data:`CELL_FAILURES`) restarts the cell and runs the episode again (``cell_restarts`` in the row); after
``max_restarts`` it is stored as a failure with ``cell_failed: true`` and the reason, so a resumed run does not
repeat it forever (the report counts such rows as failures; grep them out to re-run them).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from gpc_ros.benchmark.plan import Arm
from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig
from gpc_ros.control.chunk import ChunkRejectedError
from gpc_ros.control.executor import ExecutionRefusedError
from gpc_ros.policies.chunk_policy import ChunkPolicy
from gpc_ros.policies.evaluation import default_sampler
from gpc_ros.sim.cell_control import CellControlError

logger = logging.getLogger(__name__)

#: Failures of the simulator or of the link to it (e.g. libfranka's UDP receive timeout on a starved machine, seen
#: as a reset that times out): the episode is run again on a restarted cell, up to ``SimBackend.max_restarts``.
CELL_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError, CellControlError)  # + CellError


class CellError(ConnectionError):
    """The driver refused a chunk for a reason other than the chunk itself.

    (A latched fault it could not clear, a lost link.) Raised through the cell's episode loop so that the episode
    runs again on a restarted cell.
    """


@dataclasses.dataclass(frozen=True)
class EpisodeSettings:
    """How each benchmark episode is run (shared by every arm; part of the results' identity)."""

    sampler_steps: int = 10
    """Denoising steps per chunk (DDIM on the first VP parent's schedule, flow Euler for flow parents alone)."""
    replan_every: int = 8
    """Steps executed from one chunk before the next is planned (<= the parents' horizon)."""
    time_limit_s: float | None = None
    """Override the task's time limit (simulated s; None = the task's own, 8 s for push_red)."""
    torch_threads: int = 1
    """torch intra-op threads while sampling (1: the machine is shared, and K = 2 small parents gain little)."""

    def __post_init__(self) -> None:
        for name in ("sampler_steps", "replan_every", "torch_threads"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"EpisodeSettings.{name} must be an int >= 1; got {value!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"EpisodeSettings.time_limit_s must be > 0 s or None; got {self.time_limit_s!r}")


def sampler_for(policies: Sequence[ChunkPolicy], steps: int) -> SamplerConfig:
    """The arm's sampler: DDIM on the first VP parent's schedule, or flow Euler if every parent is a flow policy.

    (For an epsilon parent inside a flow grid the first point would be pure noise; see ComposerConfig.)
    """
    return default_sampler(list(policies), steps)


def build_composer(arm: Arm, policies: Mapping[str, ChunkPolicy], steps: int) -> Composer:
    """The Composer of ``arm`` (its parents, operator and sampler; parent chunks not returned)."""
    mine = [policies[name] for name in arm.parents]
    config = ComposerConfig(operator=arm.operator, sampler=sampler_for(mine, steps), return_parent_chunks=False)
    return Composer([p.as_parent(name) for name, p in zip(arm.parents, mine)], config)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The noise generator of the chunk planned at ``step`` of the episode with layout ``seed`` (every arm)."""
    return torch.Generator().manual_seed(zlib.crc32(f"benchmark:{seed}:{step}".encode()))


class ComposedPolicy:
    """An arm as the cell's policy (see the module docstring); ``latencies_s`` holds the wall time of each chunk."""

    def __init__(self, composer: Composer, policies: Sequence[ChunkPolicy], weights: Sequence[float],
                 replan_every: int = 8) -> None:
        horizon = min(p.config.action_horizon for p in policies)
        if not 1 <= replan_every <= horizon:
            raise ValueError(f"replan_every must be in 1..{horizon} (the shortest parent horizon); got {replan_every}")
        self.composer = composer
        self.policies = list(policies)
        self.weights = [float(w) for w in weights]
        self.replan_every = replan_every
        self.latencies_s: list[float] = []
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start an episode with layout ``seed`` (clears the history and the current chunk)."""
        self.seed = int(seed)
        self.history: list[Mapping[str, np.ndarray]] = []
        self.chunk: np.ndarray | None = None
        self.chunk_step = 0
        self.latencies_s = []
        self.rejected = 0

    def window(self, policy: ChunkPolicy) -> dict[str, np.ndarray]:
        """The policy's observation window ``{key: (1, T_obs, ...)}`` ending at the latest frame."""
        t_obs = policy.config.observation.obs_horizon
        frames = [self.history[max(0, len(self.history) - t_obs + i)] for i in range(t_obs)]
        return {k: np.stack([f[k] for f in frames])[None] for k in policy.expected_keys}

    def plan(self, step: int) -> np.ndarray:
        """Sample a new ``(H, D)`` chunk at ``step`` (timed into ``latencies_s``)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            encodings = self.composer.encode([self.window(p) for p in self.policies])
            out = self.composer.compose(encodings, self.weights, generator=step_generator(self.seed, step))
        self.latencies_s.append(time.perf_counter() - t0)
        return out.actions[0, 0].numpy().astype(np.float64)

    def on_rejected(self) -> None:
        """The driver refused the last chunk (safety envelope): the previous plan continues, plan anew next step."""
        self.rejected += 1
        self.chunk = None

    def __call__(self, observation) -> np.ndarray:
        """The actions from this step on: a new chunk every ``replan_every`` steps, else the current one's rest."""
        self.history.append(observation.arrays)
        step = len(self.history) - 1
        if self.chunk is None or step - self.chunk_step >= self.replan_every:
            self.chunk = self.plan(step)
            self.chunk_step = step
        return self.chunk[step - self.chunk_step:]


class SimBackend:
    """Runs benchmark episodes on one simulated cell; a context manager."""

    def __init__(self, policies: Mapping[str, ChunkPolicy], settings: EpisodeSettings = EpisodeSettings(),
                 cell_config=None) -> None:
        from gpc_ros.sim.cell import CellConfig

        self.policies = dict(policies)
        self.settings = settings
        self.cell_config = cell_config or CellConfig()
        self.cell = None
        self._composers: dict[str, Composer] = {}
        self.max_restarts = 2
        self._current: ComposedPolicy | None = None

    def __enter__(self) -> "SimBackend":
        torch.set_num_threads(self.settings.torch_threads)
        self._start_cell()
        return self

    def _start_cell(self) -> None:
        from gpc_ros.sim.cell import SimCell

        self.cell = SimCell(self.cell_config).start()
        execute = self.cell.execute

        def execute_or_keep_plan(actions, observation_time_s, faults=None):
            try:
                execute(actions, observation_time_s, faults)
            except ChunkRejectedError as exc:
                logger.debug("chunk rejected: %s", exc)
                if self._current is not None:
                    self._current.on_rejected()
            except ExecutionRefusedError as exc:  # faulted twice or link lost: the cell's failure, not the policy's
                raise CellError(f"the driver refused a chunk: {exc}") from exc
        self.cell.execute = execute_or_keep_plan  # the driver keeps its plan when it rejects a chunk
        if self.settings.time_limit_s is not None:
            self.cell.task = dataclasses.replace(self.cell.task, time_limit_s=self.settings.time_limit_s)

    def __exit__(self, *exc: object) -> None:
        if self.cell is not None:
            self.cell.close()
            self.cell = None
        for composer in self._composers.values():
            composer.close()

    def policy(self, arm: Arm) -> ComposedPolicy:
        """A fresh :class:`ComposedPolicy` of ``arm`` (its Composer is built once and cached)."""
        composer = self._composers.get(arm.id)
        if composer is None:
            composer = self._composers[arm.id] = build_composer(arm, self.policies, self.settings.sampler_steps)
        return ComposedPolicy(composer, [self.policies[n] for n in arm.parents], arm.weights,
                              self.settings.replan_every)

    def run(self, arm: Arm, seed: int) -> dict:
        """One episode of ``arm`` from the layout of ``seed``: the fields of its results row."""
        wall0 = time.monotonic()
        for attempt in range(self.max_restarts + 1):
            policy = self._current = self.policy(arm)
            try:
                result = self.cell.run_episode(policy, seed, record=False)
                break
            except CELL_FAILURES as exc:  # the simulator or its link, not the policy: restart the cell, run again
                logger.warning("episode %s seed %d: the cell failed (%s: %s); restarting it%s", arm.id, seed,
                               type(exc).__name__, exc, "" if attempt < self.max_restarts else " (giving up)")
                self.cell.close()
                self._start_cell()
                if attempt == self.max_restarts:  # stored as a failed episode that says why (not re-run forever)
                    return {"success": False, "reason": f"cell failed {attempt + 1} times: {type(exc).__name__}: "
                            f"{exc}"[:300], "cell_failed": True, "cell_restarts": attempt + 1,
                            "wall_s": round(time.monotonic() - wall0, 3), "chunks": 0, "chunk_ms_total": 0.0}
        lat = policy.latencies_s
        return {"success": bool(result.outcome.success), "reason": result.outcome.reason,
                "target_distance_m": round(float(result.outcome.target_distance_m), 5), "steps": result.steps,
                "sim_s": round(result.sim_s, 3), "wall_s": round(time.monotonic() - wall0, 3),
                "chunks": len(lat), "chunk_ms_total": round(1e3 * sum(lat), 3),
                "chunk_ms_max": round(1e3 * max(lat), 3) if lat else None,
                "chunks_rejected": policy.rejected, "cell_restarts": attempt, "faults_recovered": result.faults,
                "late_steps": result.late_steps}
