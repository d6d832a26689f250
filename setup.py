"""gpc_ros: one ament_python package, installable with colcon (ROS 2 Jazzy) or pip (no ROS)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "gpc_ros"


def share(folder: str, pattern: str = "*") -> tuple[str, list[str]]:
    """Install every file matching ``folder/pattern`` into ``share/gpc_ros/folder``."""
    return (f"share/{PACKAGE}/{folder}", sorted(p for p in glob(f"{folder}/{pattern}")))


# Console scripts: one per ROS node (started by the launch file and by `gpc-ros bringup`) and the CLI.
NODES: dict[str, str] = {
    # "executable": "module:function", added by each node's issue
    "camera_node": "gpc_ros.nodes.camera_node:main",
    "pointcloud_node": "gpc_ros.nodes.pointcloud_node:main",
    "franka_driver_node": "gpc_ros.nodes.franka_driver_node:main",
    "policy_host_node": "gpc_ros.nodes.policy_host_node:main",
    "composer_node": "gpc_ros.nodes.composer_node:main",
    "recorder_node": "gpc_ros.nodes.recorder_node:main",
    "monitor_node": "gpc_ros.nodes.monitor_node:main",
    "viewer_node": "gpc_ros.nodes.viewer_node:main",
    "sim_clock_node": "gpc_ros.nodes.sim_clock_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.py"),
        share("config"),
        share("urdf"),
        # shipped parents: parents/<name>/ -> share/gpc_ros/parents/<name>/ (gpc_ros.policies.registry finds them)
        *[share(folder) for folder in sorted(glob("parents/*")) if glob(f"{folder}/config.json")],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="gpc_ros maintainers",
    maintainer_email="maintainers@gpc-ros.org",
    description="General Policy Composition of diffusion/flow robot policies on a Franka arm (ROS 2).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{exe} = {target}" for exe, target in NODES.items()]
        + ["gpc-ros = gpc_ros.cli:main"],
    },
)
