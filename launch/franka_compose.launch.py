"""Launch the gpc_ros graph: cameras, point cloud, one policy host per parent, the composer and the Franka driver.

``ros2 launch gpc_ros franka_compose.launch.py [use_sim:=true] [robot_ip:=172.16.0.2] [config:=/path/graph.yaml]
[deployment:=in_process] [rviz:=true]``. The processes come from config/graph.yaml through
``gpc_ros.graph.description.describe_graph``, the same function ``gpc-ros bringup`` uses (docs/graph.md).
"""

from __future__ import annotations

import sys

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

ARGUMENTS = {
    "use_sim": ("false", "true: start the simulated FR3 (franky-sim) and drive it instead of a real arm"),
    "robot_ip": ("", "FCI address of the arm (empty: the graph file's robot_ip, or sim_robot_ip with use_sim)"),
    "config": ("", "graph description YAML (empty: share/gpc_ros/config/graph.yaml)"),
    "deployment": ("", ("separate (one process per policy host) or in_process (hosts inside the composer); "
                        "empty: the graph file's")),
    "rviz": ("false", "true: also start robot_state_publisher with urdf/fr3.urdf and rviz2 with config/gpc.rviz"),
}


def graph_actions(context, *args, **kwargs):
    """The graph's processes, resolved at launch time from the arguments."""
    from gpc_ros.graph.description import describe_graph

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    description = describe_graph(arg("config") or None, use_sim=arg("use_sim").lower() in ("true", "1"),
                                 robot_ip=arg("robot_ip") or None, deployment=arg("deployment") or None)
    actions = []
    for spec in description.processes:
        if not spec.is_node:
            actions.append(ExecuteProcess(cmd=[sys.executable, "-m", spec.module, *spec.args], name=spec.name,
                                          output="screen"))
            continue
        actions.append(Node(package="gpc_ros", executable=spec.executable, name=spec.name, output="screen",
                            parameters=[*spec.params_files, spec.parameters] if spec.parameters
                            else list(spec.params_files),
                            remappings=list(spec.remappings)))
    return actions


def rviz_actions(context, *args, **kwargs):
    """robot_state_publisher (urdf/fr3.urdf), the markers (monitor_node) and rviz2 (config/gpc.rviz)."""
    from gpc_ros.monitor.description import robot_description
    from gpc_ros.paths import share_dir

    share = share_dir()
    if not (share / "urdf" / "fr3.urdf").is_file():
        raise FileNotFoundError(f"rviz:=true needs the FR3 description {share / 'urdf' / 'fr3.urdf'} (urdf/)")
    urdf = robot_description()  # package://franka_description meshes when installed, else franky-sim's copies
    return [
        Node(package="gpc_ros", executable="monitor_node", name="monitor_node",
             parameters=[str(share / "config" / "monitor.yaml")], output="screen"),
        Node(package="robot_state_publisher", executable="robot_state_publisher", name="robot_state_publisher",
             parameters=[{"robot_description": urdf}], output="screen"),
        Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(share / "config" / "gpc.rviz")],
             output="screen"),
    ]


def generate_launch_description() -> LaunchDescription:
    """The launch description: the graph of config/graph.yaml and, with ``rviz:=true``, RViz."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    rviz = OpaqueFunction(function=rviz_actions, condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription([*declared, OpaqueFunction(function=graph_actions), rviz])
