"""The one description of the graph (config/graph.yaml) -> the list of processes to start (no ROS here).

Both ``launch/franka_compose.launch.py`` (one ``launch_ros`` ``Node`` per entry) and ``gpc-ros bringup`` (plain
processes ``python -m gpc_ros.nodes.<executable> --ros-args ...``) call :func:`describe_graph`, so both start the
same nodes with the same parameter files, parameter overrides and remappings. The file format is documented in
docs/graph.md.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpc_ros.paths import share_dir

EXECUTABLES = ("camera_node", "pointcloud_node", "franka_driver_node", "policy_host_node", "composer_node",
               "sim_clock_node")
WHEN = ("always", "sim", "real", "separate")
ON_CHILD_EXIT = ("stop", "restart")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the graph: a node (``executable``) or the simulator (``module``)."""

    name: str
    """Node name (``-r __node:=name``) or the simulator's label."""
    executable: str = ""
    """gpc_ros node executable (``gpc_ros.nodes.<executable>``); empty for a plain module."""
    module: str = ""
    """A plain python module run with ``python -m`` (the simulator)."""
    args: tuple[str, ...] = ()
    """Arguments of a plain module."""
    params_files: tuple[str, ...] = ()
    """Absolute paths of ROS parameter files, in order."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Parameter overrides (applied after the files)."""
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def is_node(self) -> bool:
        """True for a ROS node (it has an executable), False for a plain process such as the simulator."""
        return bool(self.executable)

    def argv(self, python: str = sys.executable) -> list[str]:
        """The command line of this process without a ROS install (what ``gpc-ros bringup`` runs)."""
        if not self.is_node:
            return [python, "-m", self.module, *self.args]
        out = [python, "-m", f"gpc_ros.nodes.{self.executable}", "--ros-args", "-r", f"__node:={self.name}"]
        for path in self.params_files:
            out += ["--params-file", path]
        for key, value in self.parameters.items():
            out += ["-p", f"{key}:={yaml_value(value)}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out


def yaml_value(value: Any) -> str:
    """A parameter value as ``-p name:=value`` text (rcl parses it as YAML)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


@dataclass(frozen=True)
class GraphDescription:
    """The resolved graph: its processes in start order and what the supervisor does when one dies."""

    processes: tuple[ProcessSpec, ...]
    on_child_exit: str = "stop"
    max_restarts: int = 3
    stop_timeout_s: float = 10.0
    use_sim: bool = False
    robot_ip: str = ""


def _substitute(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _VARIABLE.fullmatch(value)
        if whole:
            return variables[whole.group(1)]
        return _VARIABLE.sub(lambda m: str(variables[m.group(1)]), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def default_graph_file() -> Path:
    """The installed ``config/graph.yaml`` (the graph used when none is given)."""
    return share_dir() / "config" / "graph.yaml"


def describe_graph(path: str | Path | None = None, *, use_sim: bool | None = None, robot_ip: str | None = None,
                   deployment: str | None = None) -> GraphDescription:
    """Read a graph file and resolve it for ``use_sim`` / ``robot_ip`` / ``deployment``.

    Args:
        path: The graph file (default: ``config/graph.yaml``).
        use_sim: Drive the simulated FR3 (None = the file's value).
        robot_ip: The FCI address (None = the file's value).
        deployment: ``separate`` or ``in_process`` policy hosts (None = the file's value).

    Returns:
        The resolved description: every process with its command line, parameters and remappings.

    Raises:
        ValueError: The file is missing or invalid; the message names the entry and field at fault.
    """
    path = Path(path) if path is not None else default_graph_file()
    if not path.is_file():
        raise ValueError(f"graph file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    graph = data.get("graph", {})
    unknown = set(graph) - {"use_sim", "robot_ip", "sim_robot_ip", "deployment", "on_child_exit", "max_restarts",
                            "stop_timeout_s", "sim_time"}
    if unknown:
        raise ValueError(f"{path}: unknown graph field(s) {sorted(unknown)}")
    sim = bool(graph.get("use_sim", False) if use_sim is None else use_sim)
    ip = robot_ip or (graph.get("sim_robot_ip", "127.0.0.2") if sim else graph.get("robot_ip", "172.16.0.2"))
    mode = deployment or graph.get("deployment", "separate")
    if mode not in ("separate", "in_process"):
        raise ValueError(f"{path}: graph.deployment must be 'separate' or 'in_process'; got {mode!r}")
    on_exit = graph.get("on_child_exit", "stop")
    if on_exit not in ON_CHILD_EXIT:
        raise ValueError(f"{path}: graph.on_child_exit must be one of {ON_CHILD_EXIT}; got {on_exit!r}")
    variables = {"robot_ip": ip, "use_sim": sim, "deployment": mode}
    processes: list[ProcessSpec] = []
    if sim:
        spec = data.get("sim")
        if not isinstance(spec, dict) or "module" not in spec:
            raise ValueError(f"{path}: use_sim needs a 'sim' entry with a 'module'")
        processes.append(ProcessSpec(name=spec.get("name", "sim"), module=spec["module"],
                                     args=tuple(str(a) for a in _substitute(spec.get("args", []), variables))))
    config_dir = path.parent
    for i, entry in enumerate(data.get("nodes", [])):
        where = f"{path}: nodes[{i}]"
        unknown = set(entry) - {"name", "executable", "params_files", "sim_params_files", "parameters",
                                "sim_parameters", "remappings", "when"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
        if entry.get("executable") not in EXECUTABLES:
            raise ValueError(f"{where}: executable must be one of {EXECUTABLES}; got {entry.get('executable')!r}")
        when = entry.get("when", "always")
        conditions = when if isinstance(when, list) else [when]
        if not conditions or any(c not in WHEN for c in conditions):
            raise ValueError(f"{where}: when must be one of {WHEN} or a list of them (all must hold); got {when!r}")
        if any((c == "sim" and not sim) or (c == "real" and sim) or (c == "separate" and mode != "separate")
               for c in conditions):
            continue
        files = []
        for name in [*entry.get("params_files", []), *(entry.get("sim_params_files", []) if sim else [])]:
            file = (config_dir / name).resolve()
            if not file.is_file():
                raise ValueError(f"{where}: params file {name!r} not found in {config_dir}")
            files.append(str(file))
        parameters = dict(entry.get("parameters", {}))
        if sim:
            if graph.get("sim_time", False):  # every node on the simulated clock (/clock), unless it says otherwise
                parameters.setdefault("use_sim_time", True)
            parameters.update(entry.get("sim_parameters", {}))
        parameters = _substitute(parameters, variables)
        remappings = tuple((str(a), str(b)) for a, b in dict(entry.get("remappings", {})).items())
        processes.append(ProcessSpec(name=entry["name"], executable=entry["executable"], params_files=tuple(files),
                                     parameters=parameters, remappings=remappings))
    names = [p.name for p in processes]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: process names must be unique; got {names}")
    return GraphDescription(tuple(processes), on_exit, int(graph.get("max_restarts", 3)),
                            float(graph.get("stop_timeout_s", 10.0)), sim, ip)
