"""One demo run: the graph of ``gpc-ros bringup --sim`` on the push_red cell, seeded episodes, one report line each.

The graph comes from ``config/graph.yaml`` (:func:`gpc_ros.graph.description.describe_graph` with ``use_sim``), so
it is exactly what ``gpc-ros bringup --sim`` starts: the cell with its clock, the front camera and the point cloud,
one policy host per parent, the composer, the driver — with two differences: the driver keeps ``require_enable``
(the demo enables it explicitly for each episode) and ``gpc-ros record`` runs as one more supervised process.

Each episode (seed ``seed + i``): the driver's planned stop (``~/stop``: answered at rest), the cell's reset through
its control channel (:class:`gpc_ros.sim.cell_control.CellClient`, retried while franky winds its stop down), a
second stop once the driver has read the new pose (its command gate restarts there, as ``SimCell.reset`` does), a
short settle so every host's observation window holds frames of the new layout, then ``~/enable``; the episode
ends when the simulator state says success or at the time limit (simulated s). Failures of the graph —
a process that exits, no chunk for ``chunk_timeout_s`` wall seconds — end the run with :class:`GraphFailedError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from gpc_ros.graph.description import GraphDescription, ProcessSpec, describe_graph

logger = logging.getLogger(__name__)

#: Driver intervention counters that are the safety envelope acting on the policy's targets (docs/driver.md); the
#: ``refused_*`` ones come from the demo's own stop/enable between episodes and are left out.
ENVELOPE_COUNTERS_PREFIX = ("clamped_",)
ENVELOPE_COUNTERS = ("projected_unreachable", "held_unreachable", "halted_measured", "rejected_jump", "hard_stops")


class GraphFailedError(RuntimeError):
    """The graph failed (a process exited, or no chunk arrived); the message names what."""


@dataclass(frozen=True)
class DemoConfig:
    """What ``gpc-ros demo`` runs (times in simulated s unless they say wall)."""

    episodes: int = 3
    """Seeded episodes with the composed policy (seeds ``seed .. seed + episodes - 1``)."""
    seed: int = 100000
    """Layout seed of the first episode (default: held out, the benchmark's first seed; demonstrations: 0…~250)."""
    time_limit_s: float | None = None
    """Episode length limit (simulated s); None = the task's (8 s for push_red)."""
    weights: tuple[float, ...] | None = None
    """Composer weights, one per parent in the composer's order; None = the graph's (config/sim_composer.yaml)."""
    compare: bool = False
    """Afterwards run the same seeds with each parent alone (weights one-hot)."""
    viewer: bool = False
    """Also start the Foxglove view (viewer_node)."""
    graph: str | None = None
    """Graph description (default config/graph.yaml)."""
    deployment: str | None = None
    """separate | in_process policy hosts (default: the graph file's)."""
    settle_s: float = 0.3
    """Simulated time between the reset and enabling the driver (fills the hosts' observation windows)."""
    chunk_timeout_s: float = 120.0
    """Wall seconds without any composed chunk that count as a failed graph."""
    startup_timeout_s: float = 600.0
    """Wall seconds for the graph to come up (cell served, driver connected, a first chunk)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.episodes, int) and self.episodes >= 1):
            raise ValueError(f"DemoConfig.episodes must be an int >= 1; got {self.episodes!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"DemoConfig.seed must be an int >= 0; got {self.seed!r}")
        if self.time_limit_s is not None and not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise ValueError(f"DemoConfig.time_limit_s must be > 0 simulated s or None; got {self.time_limit_s!r}")
        if self.weights is not None and (not self.weights or any(not (math.isfinite(w) and w >= 0)
                                                                  for w in self.weights)):
            raise ValueError(f"DemoConfig.weights must be finite numbers >= 0, one per parent; got {self.weights!r}")
        for name in ("settle_s", "chunk_timeout_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DemoConfig.{name} must be > 0 s; got {getattr(self, name)!r}")


@dataclass
class EpisodeReport:
    """One episode as printed and stored in ``summary.json``."""

    index: int
    seed: int
    policy: str
    """``composed`` or the parent's name (``--compare``)."""
    weights: dict[str, float]
    success: bool
    reason: str
    target_distance_m: float
    start_s: float
    """Graph (simulated) time the driver was enabled."""
    end_s: float
    wall_s: float
    chunks: int
    latency_median_s: float | None
    """Median observation-to-chunk latency (simulated s: chunk receipt minus its observation stamp)."""
    interventions: int
    intervention_counts: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Simulated seconds from enabling the driver to success or the time limit."""
        return self.end_s - self.start_s

    @property
    def real_time_factor(self) -> float:
        """Simulated seconds per wall second over the episode."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else float("nan")

    def line(self) -> str:
        """The printed line."""
        weights = " ".join(f"{k} {v:g}" for k, v in self.weights.items())
        latency = "-" if self.latency_median_s is None else f"{self.latency_median_s:.3f} s"
        return (f"episode {self.index + 1} seed {self.seed} [{self.policy}: {weights}]: "
                f"success {'YES' if self.success else 'no'} ({self.reason}), {self.duration_s:.2f} s simulated "
                f"({self.wall_s:.1f} s wall, real-time factor {self.real_time_factor:.2f}), {self.chunks} chunks, "
                f"median observation-to-chunk latency {latency}, envelope interventions {self.interventions}")

    def row(self) -> dict:
        """JSON-able record."""
        out = dataclasses.asdict(self)
        out.update(duration_s=round(self.duration_s, 4), real_time_factor=round(self.real_time_factor, 4))
        return out


def envelope_interventions(before: dict[str, str], after: dict[str, str]) -> dict[str, int]:
    """Increase of each envelope counter between two driver diagnostics (``interventions.<name>`` values)."""
    out = {}
    for key, value in after.items():
        if not key.startswith("interventions."):
            continue
        name = key.removeprefix("interventions.")
        if not (name.startswith(ENVELOPE_COUNTERS_PREFIX) or name in ENVELOPE_COUNTERS):
            continue
        delta = int(float(value)) - int(float(before.get(key, "0")))
        if delta:
            out[name] = delta
    return out


def episode_chunks(chunks: Sequence[tuple[float, float, float]], start_s: float, end_s: float
                   ) -> tuple[int, float | None]:
    """(number of chunks received in ``[start_s, end_s]`` graph time, median latency s) of ``(wall, t, stamp)``."""
    inside = [t - stamp for _, t, stamp in chunks if start_s <= t <= end_s]
    return len(inside), (float(np.median(inside)) if inside else None)


# ------------------------------------------------------------------------------------------------------- the graph
def demo_graph(config: DemoConfig, host: str, bag_dir: Path) -> GraphDescription:
    """The graph of ``bringup --sim`` on ``host`` + the recorder; driver enabled explicitly; weights overridden."""
    description = describe_graph(config.graph, use_sim=True, robot_ip=host, deployment=config.deployment)
    processes = []
    for spec in description.processes:
        if spec.executable == "franka_driver_node":
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "require_enable": True})
        if spec.executable == "composer_node" and config.weights is not None:
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "weights": [float(w) for w in
                                                                                         config.weights]})
        processes.append(spec)
    recorder = ProcessSpec(name="recorder", module="gpc_ros.nodes.recorder_node",
                           args=("-o", str(bag_dir), "--ros-args", "-p", "use_sim_time:=true"))
    processes.append(recorder)
    if config.viewer:
        from gpc_ros.graph.bringup import with_viewer

        description = dataclasses.replace(description, processes=tuple(processes))
        description = with_viewer(description, "127.0.0.1", 8765)
        processes = list(description.processes)
    return dataclasses.replace(description, processes=tuple(processes))


def composer_settings(description: GraphDescription) -> dict:
    """The composer's effective parameters from its parameter files and overrides (parents, weights, timing)."""
    spec = next((p for p in description.processes if p.executable == "composer_node"), None)
    if spec is None:
        raise ValueError("the graph has no composer_node")
    merged: dict = {}
    for path in spec.params_files:
        block = (yaml.safe_load(Path(path).read_text()) or {}).get("composer", {}).get("ros__parameters", {})
        merged.update(block)
    merged.update({k: v for k, v in spec.parameters.items() if "." not in k})
    return merged


def host_checkpoints(description: GraphDescription, parents: Sequence[str]) -> dict[str, str]:
    """Parent name -> its host's ``checkpoint`` (from the composer's parameter files, ``<name>_host`` blocks)."""
    spec = next(p for p in description.processes if p.executable == "composer_node")
    found: dict[str, str] = {}
    for path in spec.params_files:
        for block in (yaml.safe_load(Path(path).read_text()) or {}).values():
            params = block.get("ros__parameters", {}) if isinstance(block, dict) else {}
            if params.get("name") in parents and params.get("checkpoint"):
                found[params["name"]] = str(params["checkpoint"])
    return {name: found[name] for name in parents if name in found}


def failed_child(events: Sequence[str]) -> str:
    """The supervisor's sentence about the first child that exited (or a generic one)."""
    for event in events:
        if " exited with status " in event:
            return event
    return "a process of the graph stopped"


# ----------------------------------------------------------------------------------------------------- the session
class DemoSession:
    """A running demo graph: ``start()``, ``run_episode(...)`` for each episode, ``close()`` (always)."""

    def __init__(self, config: DemoConfig, out_dir: Path, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.bag_dir = self.out_dir / "recording"
        self.say = say
        self.lease = None
        self.domain_lease = None
        self.supervisor = None
        self.probe = None
        self.client = None
        self.clock = None
        self.task = None
        self.host = ""
        self.domain_id = -1
        self.log_file = None
        self.parents: list[str] = []
        self.weights: list[float] = []
        self.checkpoints: dict[str, str] = {}
        self.reports: list[EpisodeReport] = []

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> "DemoSession":
        """Lease an address and a ROS domain, start the graph and wait until the first composed chunk."""
        from gpc_ros.graph.supervisor import Supervisor
        from gpc_ros.leases import acquire
        from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env
        from gpc_ros.sim.clock import SimClock, SimClockConfig
        from gpc_ros.sim.franky_sim_process import lease_loopback_host
        from gpc_ros.sim.tasks import get_task

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.lease, self.host = lease_loopback_host()
        self.domain_lease = acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1))
        self.domain_id = self.domain_lease.value
        description = demo_graph(self.config, self.host, self.bag_dir)
        settings = composer_settings(description)
        self.parents = [str(p) for p in settings["parents"]]
        self.weights = [float(w) for w in settings["weights"]]
        self.checkpoints = host_checkpoints(description, self.parents)
        if len(self.weights) != len(self.parents):
            raise ValueError(f"--weights needs one weight per parent {self.parents}; got {self.weights}")
        self.task = get_task("push_red")
        if self.config.time_limit_s is not None:
            self.task = dataclasses.replace(self.task, time_limit_s=float(self.config.time_limit_s))
        env = graph_env(self.domain_id)
        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                    "FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
            os.environ[key] = env[key]  # the probe joins the graph's domain
        self.log_file = open(self.out_dir / "graph.log", "w", buffering=1)  # noqa: SIM115 (closed in close())

        def output(line: str) -> None:
            self.log_file.write(line + "\n")
            if line.startswith("[bringup]"):
                self.say(line)

        self.say(f"starting the graph: {len(description.processes)} processes on ROS domain {self.domain_id}, "
                 f"simulated cell at {self.host} (process output: {self.out_dir / 'graph.log'})")
        self.supervisor = Supervisor(description, env, output=output)
        self.supervisor.start()
        from gpc_ros.nodes.demo_probe import open_probe

        self.probe = open_probe(float(settings.get("first_action_delay_s", 0.1)))
        self.clock = SimClock(SimClockConfig(sim_host=self.host))
        deadline = time.monotonic() + self.config.startup_timeout_s
        self._wait(lambda: self.clock.read() is not None, deadline, "the simulated cell to serve")
        from gpc_ros.sim.cell_control import CellClient

        self._wait(lambda: self._connect_client(CellClient), deadline, "the cell's control channel")
        self._wait(lambda: self.probe.pose is not None, deadline, "the driver's first ee_pose")
        self._wait(lambda: len(self.probe.chunks) > 0, deadline, "the composer's first chunk (every host loaded "
                   "and observing)")
        self.say(f"graph up: parents {self.parents}, weights {self.weights}")
        return self

    def _connect_client(self, cls) -> bool:
        try:
            self.client = cls(self.host)
            return True
        except (OSError, ConnectionError):
            return False

    def _check_graph(self) -> None:
        if not self.supervisor.poll():
            raise GraphFailedError(f"graph failed: {failed_child(self.supervisor.events)}")

    def _wait(self, condition: Callable[[], bool], deadline: float, what: str) -> None:
        while not condition():
            self._check_graph()
            if time.monotonic() > deadline:
                raise GraphFailedError(f"graph failed: no {what} within the time limit "
                                   f"({self.config.startup_timeout_s:.0f} s wall)")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every process (SIGINT, SIGKILL after the graph's stop timeout), the probe, the leases (idempotent)."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.clock is not None:
            self.clock.close()
        from gpc_ros.nodes.demo_probe import close_probe

        close_probe(self.probe)
        self.probe = None
        for lease in (self.lease, self.domain_lease):
            if lease is not None:
                lease.release()
        self.lease = self.domain_lease = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    # -- episodes ---------------------------------------------------------------------------------------------------
    def _sim_now(self) -> float:
        now = self.clock.read()
        if now is None:
            raise GraphFailedError("graph failed: the simulated cell's state is gone")
        return now

    def _wait_sim(self, t_s: float, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._sim_now() < t_s:
            self._check_graph()
            if time.monotonic() > deadline:
                raise GraphFailedError(f"graph failed: simulated time stuck waiting for {what}")
            time.sleep(0.01)

    def _driver_diagnostics_after(self, t_s: float, timeout_s: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            _, values, stamp = self.probe.snapshot()
            if stamp >= t_s:
                return values
            self._check_graph()
            if time.monotonic() > deadline:
                raise GraphFailedError("graph failed: the driver published no diagnostics")
            time.sleep(0.02)

    def _reset(self, seed: int) -> float:
        from gpc_ros.sim.cell_control import CellControlError

        self.probe.stop_driver(timeout_s=120.0)
        deadline = time.monotonic() + 120.0
        while True:
            try:
                self.client.reset(seed)
                break
            except CellControlError as exc:  # refused while franky still winds its stop motion down
                if time.monotonic() > deadline:
                    raise GraphFailedError(f"graph failed: the cell refused the reset for 120 s: {exc}") from exc
                self._check_graph()
                time.sleep(0.05)
        t_reset = self._sim_now()
        deadline = time.monotonic() + 60.0
        while self.probe.pose is None or self.probe.pose[0] < t_reset + 0.02:  # the driver read the new pose
            self._check_graph()
            if time.monotonic() > deadline:
                raise GraphFailedError("graph failed: the driver did not report the arm after the reset")
            time.sleep(0.01)
        self.probe.stop_driver(timeout_s=120.0)  # its command gate restarts from the new pose
        self._wait_sim(t_reset + self.config.settle_s, "the settle time after the reset")
        return t_reset

    def run_episode(self, index: int, seed: int, policy: str, weights: Sequence[float]) -> EpisodeReport:
        """One episode from the layout of ``seed`` with ``weights``; its report (also printed)."""
        if list(weights) != list(self.weights):
            self.probe.set_weights(list(weights), timeout_s=60.0)
            self.weights = [float(w) for w in weights]
        wall0 = time.monotonic()
        t_reset = self._reset(seed)
        before = self._driver_diagnostics_after(t_reset)
        self.probe.enable_driver(True, timeout_s=60.0)
        t0 = self._sim_now()
        last_chunks, last_chunk_wall = len(self.probe.chunks), time.monotonic()
        outcome = None
        while True:
            self._check_graph()
            now = self._sim_now()
            positions = {name: np.asarray(obj["position_m"]) for name, obj in self.client.objects()["objects"].items()}
            outcome = self.task.evaluate(positions)
            if outcome.success or now >= t0 + self.task.time_limit_s:
                break
            n = len(self.probe.chunks)
            if n != last_chunks:
                last_chunks, last_chunk_wall = n, time.monotonic()
            elif time.monotonic() - last_chunk_wall > self.config.chunk_timeout_s:
                raise GraphFailedError(f"graph failed: no chunk arrived for {self.config.chunk_timeout_s:.0f} s wall "
                                   f"(see {self.out_dir / 'graph.log'})")
            time.sleep(0.02)
        t_end = now
        wall = time.monotonic() - wall0
        self.probe.stop_driver(timeout_s=120.0)
        after = self._driver_diagnostics_after(self._sim_now())
        chunks, _, _ = self.probe.snapshot()
        count, latency = episode_chunks(chunks, t0, t_end)
        counts = envelope_interventions(before, after)
        report = EpisodeReport(index, seed, policy, dict(zip(self.parents, (float(w) for w in weights))),
                               bool(outcome.success), outcome.reason, round(float(outcome.target_distance_m), 4),
                               round(t0, 4), round(t_end, 4), round(wall, 3), count,
                               None if latency is None else round(latency, 4), sum(counts.values()), counts)
        self.reports.append(report)
        self.say(report.line())
        return report

    def run_all(self) -> list[EpisodeReport]:
        """The composed episodes, then (``compare``) the same seeds with each parent alone."""
        composed = list(self.weights)
        runs: list[tuple[str, list[float]]] = [("composed", composed)]
        if self.config.compare:
            runs += [(name, [1.0 if j == i else 0.0 for j in range(len(self.parents))])
                     for i, name in enumerate(self.parents)]
        index = 0
        for policy, weights in runs:
            for k in range(self.config.episodes):
                self.run_episode(index, self.config.seed + k, policy, weights)
                index += 1
        return self.reports

    def summary(self) -> dict:
        """What ``summary.json`` holds: the run's settings, each episode, the real-time factor."""
        sim = sum(r.duration_s for r in self.reports)
        wall = sum(r.wall_s for r in self.reports)
        return {"host": self.host, "ros_domain": self.domain_id, "parents": self.parents,
                "episodes": [r.row() for r in self.reports],
                "episode_sim_s": round(sim, 3), "episode_wall_s": round(wall, 3),
                "real_time_factor": round(sim / wall, 4) if wall > 0 else None,
                "load_average": [round(v, 2) for v in os.getloadavg()]}


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
