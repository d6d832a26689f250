"""``gpc-ros bringup`` and the launch file: the whole graph on franky-sim, Ctrl-C, dead children, and the launch
file describing the same processes as the bringup."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from gpc_ros.graph.description import describe_graph
from gpc_ros.graph.supervisor import Supervisor
from gpc_ros.sim.franky_sim_process import lease_loopback_host
from gpc_ros.testing.spin import wait_until

pytestmark = pytest.mark.timeout(500)

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "franka_compose.launch.py"


# ------------------------------------------------------------------------------------- launch file vs bringup
class _Recorded:
    """A stand-in launch action/substitution that remembers how it was built."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def recording_launch_modules(arguments: dict[str, str]) -> dict[str, types.ModuleType]:
    """Minimal ``launch`` / ``launch_ros`` modules that record the calls the launch file makes.

    Why a recorder: ``launch`` and ``launch_ros`` exist only in a ROS install, not on PyPI (PyPI's ``launch`` is an
    unrelated project; docs/ros_environment.md), so this machine cannot import them. The recorder implements
    exactly what the launch file uses: LaunchDescription, DeclareLaunchArgument, OpaqueFunction, ExecuteProcess,
    IfCondition, LaunchConfiguration(...).perform(context) returning the given launch arguments, and Node.
    """
    launch = types.ModuleType("launch")
    actions = types.ModuleType("launch.actions")
    conditions = types.ModuleType("launch.conditions")
    substitutions = types.ModuleType("launch.substitutions")
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")

    class LaunchConfiguration(_Recorded):
        def perform(self, context) -> str:
            return arguments.get(self.args[0], context["defaults"][self.args[0]])

    class LaunchDescription(_Recorded):
        pass

    for module, names in ((actions, ("DeclareLaunchArgument", "OpaqueFunction", "ExecuteProcess")),
                          (conditions, ("IfCondition",)), (ros_actions, ("Node",))):
        for name in names:
            setattr(module, name, type(name, (_Recorded,), {}))
    launch.LaunchDescription = LaunchDescription
    substitutions.LaunchConfiguration = LaunchConfiguration
    launch.actions, launch.conditions, launch.substitutions = actions, conditions, substitutions
    launch_ros.actions = ros_actions
    return {"launch": launch, "launch.actions": actions, "launch.conditions": conditions,
            "launch.substitutions": substitutions, "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


def launched_processes(monkeypatch, arguments: dict[str, str]) -> list[dict]:
    """Run the launch file's generate_launch_description and its OpaqueFunctions against the recorder."""
    import importlib.util

    for name, module in recording_launch_modules(arguments).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("franka_compose_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(declared) >= {"use_sim", "robot_ip", "config", "rviz"}
    assert all(d["description"] for d in declared.values())
    context = {"defaults": {k: v["default_value"] for k, v in declared.items()}}
    out = []
    for opaque in (e for e in entities if type(e).__name__ == "OpaqueFunction"):
        if "condition" in opaque.kwargs and arguments.get("rviz", context["defaults"]["rviz"]) != "true":
            continue  # the rviz group: only when rviz is true
        for action in opaque.kwargs["function"](context):
            kind = type(action).__name__
            if kind == "Node":
                k = action.kwargs
                params = [p for p in k.get("parameters", []) if isinstance(p, str)]
                overrides = {key: v for p in k.get("parameters", []) if isinstance(p, dict) for key, v in p.items()}
                out.append({"name": k["name"], "executable": k["executable"], "package": k["package"],
                            "params_files": tuple(params), "parameters": overrides,
                            "remappings": tuple(tuple(r) for r in k.get("remappings", [])),
                            "arguments": k.get("arguments", [])})
            else:
                out.append({"name": action.kwargs["name"], "cmd": action.kwargs["cmd"][1:]})
    return out


@pytest.mark.parametrize("arguments,bringup", [
    ({}, {}), ({"use_sim": "true", "robot_ip": "127.0.0.9"}, {"use_sim": True, "robot_ip": "127.0.0.9"}),
    ({"deployment": "in_process"}, {"deployment": "in_process"})])
def test_launch_file_and_bringup_describe_the_same_processes(monkeypatch, arguments, bringup) -> None:
    launched = [p for p in launched_processes(monkeypatch, arguments)]
    described = describe_graph(**bringup).processes
    assert len(launched) == len(described)
    for got, spec in zip(launched, described):
        assert got["name"] == spec.name
        if spec.is_node:
            assert (got["package"], got["executable"]) == ("gpc_ros", spec.executable)
            assert got["params_files"] == spec.params_files
            assert got["parameters"] == spec.parameters
            assert got["remappings"] == spec.remappings
            # and bringup's command line carries exactly these
            argv = spec.argv("python")
            assert argv[:3] == ["python", "-m", f"gpc_ros.nodes.{spec.executable}"]
            assert [argv[i + 1] for i, a in enumerate(argv) if a == "--params-file"] == list(spec.params_files)
        else:
            assert got["cmd"] == ["-m", spec.module, *spec.args]


def test_launch_file_rviz_starts_robot_state_publisher_and_rviz2(monkeypatch, tmp_path) -> None:
    # a share folder with the two files the monitoring part provides (they may not have landed yet)
    (tmp_path / "urdf").mkdir()
    (tmp_path / "urdf" / "fr3.urdf").write_text("<robot name='fr3'/>")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gpc.rviz").write_text("Panels: []")
    import gpc_ros.paths

    monkeypatch.setattr(gpc_ros.paths, "share_dir", lambda: tmp_path)
    launched = launched_processes(monkeypatch, {"rviz": "true"})
    names = [p["name"] for p in launched]
    assert names[-2:] == ["robot_state_publisher", "rviz2"]
    assert launched[-1]["arguments"] == ["-d", str(tmp_path / "config" / "gpc.rviz")]
    assert "rviz2" not in [p["name"] for p in launched_processes(monkeypatch, {})]


def test_the_sim_graph_is_the_push_red_cell_on_the_simulated_clock() -> None:
    """use_sim: the cell with its task, clock, camera and cloud, the shipped parents' hosts, sim override files."""
    graph = describe_graph(use_sim=True, robot_ip="127.0.0.9")
    specs = {p.name: p for p in graph.processes}
    assert list(specs) == ["sim", "sim_clock", "camera_front", "pointcloud_node", "franka_driver", "rgb_host",
                           "dp3_host", "composer"]
    assert specs["sim"].args == ("--host", "127.0.0.9", "--pace", "realtime", "--task", "push_red")
    assert {n: s.parameters.get("use_sim_time") for n, s in specs.items() if s.is_node} == {
        n: n != "sim_clock" for n in specs if n != "sim"}
    assert [Path(f).name for f in specs["franka_driver"].params_files] == ["franka_driver.yaml",
                                                                          "sim_franka_driver.yaml"]
    assert [Path(f).name for f in specs["composer"].params_files][-2:] == ["sim_composer.yaml",
                                                                          "sim_policy_hosts.yaml"]
    assert specs["camera_front"].parameters["sim_host"] == "127.0.0.9"
    # the real cell keeps its camera, cloud and the analytic hosts, no sim-only process or file
    real = {p.name: p for p in describe_graph(use_sim=False).processes}
    assert list(real) == ["camera_node", "pointcloud_node", "franka_driver", "left_host", "right_host", "composer"]
    assert not any("sim_" in Path(f).name for p in real.values() for f in p.params_files)
    assert not any("use_sim_time" in p.parameters for p in real.values())
    # in process: no host processes on either cell
    assert "rgb_host" not in {p.name for p in describe_graph(use_sim=True, deployment="in_process").processes}


def test_bad_graph_files_are_refused_naming_the_entry(tmp_path) -> None:
    bad = tmp_path / "graph.yaml"
    bad.write_text("nodes:\n  - name: x\n    executable: nope_node\n")
    with pytest.raises(ValueError, match=r"nodes\[0\]: executable must be one of"):
        describe_graph(bad)
    bad.write_text("nodes:\n  - name: x\n    executable: camera_node\n    when: [sim, often]\n")
    with pytest.raises(ValueError, match=r"nodes\[0\]: when must be one of .* or a list of them"):
        describe_graph(bad)
    bad.write_text("graph:\n  on_child_exit: shrug\n")
    with pytest.raises(ValueError, match="on_child_exit must be one of"):
        describe_graph(bad)
    assert subprocess.run([sys.executable, "-m", "gpc_ros.cli", "bringup", "--config", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, check=False).stdout.strip().endswith("does not exist")


def test_bringup_viewer_adds_the_foxglove_view_on_the_given_port() -> None:
    out = subprocess.run([sys.executable, "-m", "gpc_ros.cli", "bringup", "--sim", "--print", "--viewer",
                          "--viewer-port", "8777"], capture_output=True, text=True, check=True).stdout.splitlines()
    viewer = [line for line in out if "gpc_ros.nodes.viewer_node" in line]
    assert len(viewer) == 1 and out[-1] == viewer[0]
    assert "port:=8777" in viewer[0] and "host:=127.0.0.1" in viewer[0] and "config/monitor.yaml" in viewer[0]
    plain = subprocess.run([sys.executable, "-m", "gpc_ros.cli", "bringup", "--sim", "--print"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert plain == out[:-1]  # the rest of the graph is unchanged


# ------------------------------------------------------------------------------------------ processes for real
def goal_only(description):
    """Just the two goal hosts and the composer (no driver, no sim)."""
    keep = {"left_host", "right_host", "composer"}
    return dataclasses.replace(description, processes=tuple(p for p in description.processes if p.name in keep),
                               stop_timeout_s=20.0)


def test_a_dead_child_is_reported_and_stops_or_is_restarted_per_config(ros_domain) -> None:
    lines: list[str] = []
    restart = dataclasses.replace(goal_only(describe_graph()), on_child_exit="restart", max_restarts=1)
    with Supervisor(restart, ros_domain.env, output=lines.append) as supervisor:
        assert supervisor.poll()
        supervisor.children["left_host"].proc.kill()
        wait_until(lambda: not supervisor.poll() or any("restarting left_host" in e for e in supervisor.events),
                   60.0, "the supervisor to restart left_host")
        assert any("left_host" in e and "exited with status -9" in e for e in supervisor.events)
        assert supervisor.children["left_host"].proc.poll() is None  # a new one runs
        supervisor.children["left_host"].proc.kill()  # second death: max_restarts (1) reached -> the graph stops
        assert supervisor.run(poll_period_s=0.1) == 1
        assert all(c.proc.poll() is not None for c in supervisor.children.values())
        # (under load a child may be reported after it, e.g. "ignored SIGINT for 20 s: SIGKILL")
        assert any("stopping the graph" in e for e in supervisor.events), supervisor.events


def test_bringup_started_with_sigint_ignored_still_stops_every_process_on_sigint(ros_domain, tmp_path) -> None:
    """A shell script's background job (``gpc-ros bringup ... &``) starts with SIGINT ignored, and Python keeps
    ignoring it: bringup then ignored ``kill -INT`` and passed the ignored SIGINT on to every node (found in
    session 20: the driver would be SIGKILLed instead of stopping the arm). Bringup handles SIGINT itself now, and
    its children start with SIGINT at its default."""
    import shutil

    import yaml

    config = Path(__file__).resolve().parents[2] / "config"
    for f in config.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    graph = yaml.safe_load((config / "graph.yaml").read_text())
    graph["nodes"] = [n for n in graph["nodes"] if n["name"] in ("left_host", "right_host", "composer")]
    graph["graph"]["stop_timeout_s"] = 90.0  # a node slow to stop under load is not SIGKILLed (asserted below)
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(graph))
    log = tmp_path / "bringup.log"
    with log.open("w") as out:
        proc = ros_domain.spawn_python("-m", "gpc_ros.cli", "bringup", "--config", str(tmp_path / "graph.yaml"),
                                       "--domain-id", str(ros_domain.domain_id), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            wait_until(lambda: "announced" in log.read_text() or proc.poll() is not None, 120.0,
                       "a host to announce itself to the composer")  # every child is past its imports
            assert proc.poll() is None, log.read_text()[-3000:]
            pids = [int(line.split("pid ")[1].rstrip(")")) for line in log.read_text().splitlines()
                    if line.startswith("[bringup] started")]
            assert len(pids) == 3, log.read_text()[-3000:]
            for pid in pids:  # the children do not inherit the ignored SIGINT
                ignored = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                                   if line.startswith("SigIgn:")).split()[1], 16)
                assert not ignored & (1 << (signal.SIGINT - 1)), pid
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=150) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "Ctrl-C: stopping every process" in text, text[-3000:]
    assert "SIGKILL" not in text, text[-3000:]  # every node stopped on its SIGINT
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.slow
def test_bringup_sim_runs_the_whole_graph_on_franky_sim_and_ctrl_c_stops_everything(ros_domain, listener) -> None:
    """`gpc-ros bringup --sim` as a user runs it: the push_red cell, both shipped parents, chunks the arm follows."""
    from geometry_msgs.msg import PoseStamped
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from gpc_ros.testing.spin import spin_until

    node, executor = listener
    poses: list[PoseStamped] = []
    chunks: list[MultiDOFJointTrajectory] = []
    node.create_subscription(PoseStamped, "/ee_pose", poses.append, 10)
    node.create_subscription(MultiDOFJointTrajectory, "/gpc/action_chunk", chunks.append, 10)
    lease, _host = lease_loopback_host()
    lease.release()  # bringup takes its own; it only has to be free now
    proc = ros_domain.spawn_python("-m", "gpc_ros.cli", "bringup", "--sim", "--domain-id",
                                   str(ros_domain.domain_id), start_new_session=True)
    try:
        assert spin_until(executor, lambda: bool(poses), 300.0), proc.poll()
        p0 = poses[0].pose.position
        start = np.array([p0.x, p0.y, p0.z])

        def moved() -> bool:  # the driver executes the composed chunks: the TCP leaves the home pose
            p = poses[-1].pose.position
            return len(chunks) >= 3 and float(np.linalg.norm(np.array([p.x, p.y, p.z]) - start)) > 0.01

        assert spin_until(executor, moved, 600.0), (proc.poll(), len(chunks), poses[-1].pose.position)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "Ctrl-C: stopping every process" in out
    started = [line.split()[2] for line in out.splitlines() if line.startswith("[bringup] started")]
    assert started == ["sim", "sim_clock", "camera_front", "pointcloud_node", "franka_driver", "rgb_host", "dp3_host",
                       "composer"]
    # every child is gone
    pids = [int(line.split("pid ")[1].rstrip(")")) for line in out.splitlines() if line.startswith("[bringup] started")]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_bringup_viewer_serves_a_websocket_and_stops_with_the_graph(ros_domain) -> None:
    import socket

    from gpc_ros.graph.bringup import with_viewer

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    graph = with_viewer(goal_only(describe_graph()), "127.0.0.1", port)
    with Supervisor(graph, ros_domain.env, output=lambda line: None) as supervisor:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                return True
            except OSError:
                return False

        def graph_running() -> None:
            assert supervisor.poll(), supervisor.events

        wait_until(listening, 90.0, f"the viewer to listen on port {port}", period_s=0.5, check=graph_running)
    assert all(c.proc.poll() is not None for c in supervisor.children.values())
