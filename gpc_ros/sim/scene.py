"""The cell's MuJoCo scene, built through franky-sim's ``sim.worldbody`` before the server starts.

What is added to franky-sim's FR3 scene (the installed package is never edited):

* a table whose top is the plane ``z = 0`` of fr3_link0 (the robot base stands on it; franky-sim's ground plane
  is moved down to the floor under the table);
* the task's cubes, each a body with a free joint (``<name>_joint``);
* the goal line, a visual-only stripe on the table (no collision, 0.5 mm thick);
* the cameras: ``front`` (fixed, across the table, looking at the workspace) and ``wrist`` (on the hand, looking
  past the fingers), with REP-103 optical frames documented in :mod:`gpc_ros.sim.cameras`.

The same function builds the server's model and the renderers' copies, so qpos layouts always agree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from gpc_ros.sim.tasks import PushTaskConfig

#: Height of the table top above the floor (m); the floor is at z = -TABLE_HEIGHT_M in fr3_link0.
TABLE_HEIGHT_M = 0.75
#: Table extent in fr3_link0 (m): x from -0.25 to 1.05, y from -0.7 to 0.7.
TABLE_MIN_XY_M = (-0.25, -0.7)
TABLE_MAX_XY_M = (1.05, 0.7)
TABLE_RGBA = (0.62, 0.55, 0.47, 1.0)
GOAL_LINE_RGBA = (0.95, 0.95, 0.95, 1.0)
ROBOT_PREFIX = "robot0_"
#: Body the wrist camera is mounted on (franky-sim's FR3 hand).
HAND_BODY = ROBOT_PREFIX + "hand"


@dataclass(frozen=True)
class CameraMount:
    """Where a camera sits: ``position_m`` and ``look_at_m`` in its parent body's frame, ``up`` the image-up hint.

    ``body`` is ``"world"`` (= fr3_link0) or a body name (the wrist camera: :data:`HAND_BODY`).
    """

    name: str
    body: str
    position_m: tuple[float, float, float]
    look_at_m: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy_deg: float

    def optical_rotation(self) -> np.ndarray:
        """(3, 3) rotation of the REP-103 optical frame (x right, y down, z forward) in the parent body's frame."""
        forward = np.subtract(self.look_at_m, self.position_m).astype(float)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, self.up)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward], axis=1)

    def mujoco_quaternion_wxyz(self) -> tuple[float, float, float, float]:
        """MuJoCo camera orientation (camera looks along its -z, image up = +y) as (w, x, y, z)."""
        r_opt = self.optical_rotation()
        r_mj = r_opt @ np.diag([1.0, -1.0, -1.0])
        from gpc_ros.action_space import _matrix_to_quat

        x, y, z, w = _matrix_to_quat(r_mj)
        return (float(w), float(x), float(y), float(z))


#: The cell's cameras (a RealSense D435-like front camera, a D405-like wrist camera).
CAMERAS: dict[str, CameraMount] = {
    "front": CameraMount("front", "world", (0.95, 0.0, 0.42), (0.47, 0.0, 0.0), (0.0, 0.0, 1.0), 42.0),
    "wrist": CameraMount("wrist", HAND_BODY, (0.06, 0.0, 0.03), (0.14, 0.0, 0.20), (1.0, 0.0, 0.0), 58.0),
}


def _fmt(values) -> str:
    return " ".join(f"{float(v):.12g}" for v in values)


def build_cell(sim, task: PushTaskConfig) -> None:
    """Add table, goal line, the task's free cubes and the cameras to a franky-sim ``MujocoSimulator``.

    The robot must already be added and the server not yet started. Cubes start at the layout of seed 0.
    """
    world = sim.worldbody
    for geom in world.findall("geom"):
        if geom.get("name") == "ground":
            geom.set("pos", f"0 0 {-TABLE_HEIGHT_M}")
    cx = 0.5 * (TABLE_MIN_XY_M[0] + TABLE_MAX_XY_M[0])
    cy = 0.5 * (TABLE_MIN_XY_M[1] + TABLE_MAX_XY_M[1])
    hx = 0.5 * (TABLE_MAX_XY_M[0] - TABLE_MIN_XY_M[0])
    hy = 0.5 * (TABLE_MAX_XY_M[1] - TABLE_MIN_XY_M[1])
    table = ET.SubElement(world, "body", name="table", pos=_fmt((cx, cy, -TABLE_HEIGHT_M / 2)))
    ET.SubElement(table, "geom", name="table_top", type="box", size=_fmt((hx, hy, TABLE_HEIGHT_M / 2)),
                  rgba=_fmt(TABLE_RGBA), friction="0.5 0.005 0.0001")
    ET.SubElement(world, "geom", name="goal_line", type="box", contype="0", conaffinity="0",
                  pos=_fmt((task.goal_line_x_m, 0.0, 0.00025)), size=_fmt((0.006, 0.35, 0.00025)),
                  rgba=_fmt(GOAL_LINE_RGBA))
    layout = task.sample_layout(0)
    h = task.cube_half_size_m
    for name in task.object_names:
        pose = layout[name]
        body = ET.SubElement(world, "body", name=name, pos=_fmt(pose.position_m), quat=_fmt(pose.quaternion_wxyz))
        ET.SubElement(body, "freejoint", name=f"{name}_joint")
        ET.SubElement(body, "geom", name=f"{name}_geom", type="box", size=_fmt((h, h, h)), mass=f"{task.cube_mass_kg}",
                      rgba=_fmt(task.object_rgba(name)), friction="0.6 0.005 0.0001", condim="4")
    hand = None
    for body in world.iter("body"):
        if body.get("name") == HAND_BODY:
            hand = body
    if hand is None:
        raise RuntimeError(f"franky-sim's scene has no body {HAND_BODY!r}: add the robot before build_cell()")
    for mount in CAMERAS.values():
        parent = world if mount.body == "world" else hand
        ET.SubElement(parent, "camera", name=mount.name, pos=_fmt(mount.position_m),
                      quat=_fmt(mount.mujoco_quaternion_wxyz()), fovy=f"{mount.fovy_deg}")


def new_simulator(task: PushTaskConfig):
    """A franky-sim ``MujocoSimulator`` with the FR3 at the task's home pose and the cell built (not started)."""
    from franky_sim.mujoco_simulator import MujocoSimulator

    sim = MujocoSimulator(enable_visualization=False)
    sim.add_robot(initial_q=task.home_joint_positions_rad, initial_hand_width=task.home_gripper_width_m)
    build_cell(sim, task)
    return sim


def cell_model_xml(task: PushTaskConfig) -> str:
    """The MJCF of the whole cell (what the server simulates), for renderers that keep their own model copy."""
    return ET.tostring(new_simulator(task).scene, encoding="unicode")
