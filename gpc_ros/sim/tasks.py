"""Tasks of the simulated cell: objects, randomised layouts, success checked from the simulator state, time limits.

All positions are in ``fr3_link0`` (= the MuJoCo world frame of the cell: the robot base stands at the origin on
the table, whose top is the plane ``z = 0``).

``push_red`` (the default task, docs/sim.md): a red cube and ``num_distractors`` look-alike cubes (same size,
mass and friction, other colours) stand on the table in front of the robot. Push the **red** cube across the goal
line ``x = goal_line_x_m`` (a stripe painted on the table) without pushing a look-alike across it. The red cube is
identified by its colour only (an xyz point cloud shows identical cubes), while where exactly each cube stands
and how it is turned comes best from depth: the camera modalities carry different information by design.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: RGBA of the target and of the look-alikes (the first ``num_distractors`` of ``DISTRACTOR_RGBA`` are used).
TARGET_RGBA = (0.85, 0.12, 0.10, 1.0)
DISTRACTOR_RGBA = ((0.12, 0.30, 0.85, 1.0), (0.10, 0.62, 0.22, 1.0), (0.85, 0.75, 0.10, 1.0))


@dataclass(frozen=True)
class ObjectPose:
    """Where a free object is: centre position (m) and yaw about the vertical (rad), in fr3_link0."""

    position_m: tuple[float, float, float]
    yaw_rad: float

    @property
    def quaternion_wxyz(self) -> tuple[float, float, float, float]:
        """MuJoCo's quaternion order (w, x, y, z) of the yaw rotation."""
        return (float(np.cos(self.yaw_rad / 2)), 0.0, 0.0, float(np.sin(self.yaw_rad / 2)))


@dataclass(frozen=True)
class PushTaskConfig:
    """The ``push_red`` task (lengths in m, times in s, angles in rad)."""

    name: str = "push_red"
    num_distractors: int = 1
    """Look-alike cubes besides the red one (0..3)."""
    cube_half_size_m: float = 0.025
    cube_mass_kg: float = 0.15
    goal_line_x_m: float = 0.60
    """Success: the red cube's centre at x >= this line; every look-alike's centre behind it."""
    spawn_x_m: tuple[float, float] = (0.44, 0.52)
    spawn_y_m: tuple[float, float] = (-0.14, 0.14)
    spawn_yaw_rad: tuple[float, float] = (-0.5, 0.5)
    min_lateral_gap_m: float = 0.10
    """Cube centres are at least this far apart in y, so pushing one straight ahead never touches another."""
    time_limit_s: float = 8.0
    """Episode length limit (simulated seconds)."""
    fps: float = 10.0
    """Policy / dataset rate (Hz)."""
    table_reach_y_m: float = 0.45
    """A cube whose |y| exceeds this, or whose centre drops below the table top, has left the table (failure)."""
    home_joint_positions_rad: tuple[float, ...] = (0.0, -0.1785, 0.0, -2.7127, 0.0, 2.5342, 0.785)
    """Arm configuration of every episode start: fr3_hand_tcp at (0.40, 0, 0.18) m pointing down."""
    home_gripper_width_m: float = 0.0
    """The hand starts (and pushes) closed."""

    def __post_init__(self) -> None:
        if not (isinstance(self.num_distractors, int) and 0 <= self.num_distractors <= len(DISTRACTOR_RGBA)):
            raise ValueError(f"PushTaskConfig.num_distractors must be an int in 0..{len(DISTRACTOR_RGBA)}, "
                             f"got {self.num_distractors!r}")
        for name in ("cube_half_size_m", "cube_mass_kg", "time_limit_s", "fps", "min_lateral_gap_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PushTaskConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("spawn_x_m", "spawn_y_m", "spawn_yaw_rad"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"PushTaskConfig.{name} must be (low, high) with low <= high, got {(lo, hi)!r}")
        if self.spawn_x_m[1] + self.cube_half_size_m >= self.goal_line_x_m:
            raise ValueError(f"PushTaskConfig.goal_line_x_m must lie beyond the spawn area (> "
                             f"{self.spawn_x_m[1] + self.cube_half_size_m} m), got {self.goal_line_x_m!r}")
        span = self.spawn_y_m[1] - self.spawn_y_m[0]
        if self.num_distractors * self.min_lateral_gap_m > span:
            raise ValueError(f"PushTaskConfig: {self.num_distractors + 1} cubes {self.min_lateral_gap_m} m apart do "
                             f"not fit in spawn_y_m {self.spawn_y_m}")
        if len(self.home_joint_positions_rad) != 7:
            raise ValueError(f"PushTaskConfig.home_joint_positions_rad needs 7 values, got "
                             f"{len(self.home_joint_positions_rad)}")

    # -- objects -------------------------------------------------------------------------------------------------
    @property
    def object_names(self) -> tuple[str, ...]:
        """Free bodies of the scene: ``target`` first, then ``distractor1..``."""
        return ("target", *(f"distractor{i + 1}" for i in range(self.num_distractors)))

    def object_rgba(self, name: str) -> tuple[float, float, float, float]:
        """Colour of object ``name``."""
        return TARGET_RGBA if name == "target" else DISTRACTOR_RGBA[int(name.removeprefix("distractor")) - 1]

    @property
    def steps(self) -> int:
        """Policy steps in the time limit."""
        return int(round(self.time_limit_s * self.fps))

    def sample_layout(self, seed: int) -> dict[str, ObjectPose]:
        """The object poses of episode ``seed`` (deterministic in ``seed``)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
        rng = np.random.default_rng([int(seed), 1107])
        z = self.cube_half_size_m
        ys: list[float] = []
        n = len(self.object_names)
        for _ in range(1000):  # rejection sampling of lateral positions that keep the gap
            ys = list(rng.uniform(*self.spawn_y_m, size=n))
            if all(abs(a - b) >= self.min_lateral_gap_m for i, a in enumerate(ys) for b in ys[i + 1:]):
                break
        else:  # pragma: no cover - __post_init__ guarantees the gap fits
            raise RuntimeError("could not place the cubes")
        xs = rng.uniform(*self.spawn_x_m, size=n)
        yaws = rng.uniform(*self.spawn_yaw_rad, size=n)
        return {name: ObjectPose((float(xs[i]), float(ys[i]), z), float(yaws[i]))
                for i, name in enumerate(self.object_names)}

    # -- success -------------------------------------------------------------------------------------------------
    def evaluate(self, positions_m: Mapping[str, np.ndarray]) -> "TaskOutcome":
        """Success / failure from the objects' centre positions (m, fr3_link0) read from the simulator."""
        missing = [n for n in self.object_names if n not in positions_m]
        if missing:
            raise KeyError(f"object positions lack {missing}; the task has {list(self.object_names)}")
        target = np.asarray(positions_m["target"], dtype=np.float64)
        off_table = [n for n in self.object_names
                     if abs(positions_m[n][1]) > self.table_reach_y_m or positions_m[n][2] < 0.0]
        crossed = [n for n in self.object_names[1:] if positions_m[n][0] >= self.goal_line_x_m]
        target_in = bool(target[0] >= self.goal_line_x_m)
        success = target_in and not crossed and not off_table
        if success:
            reason = "red cube across the goal line"
        elif off_table:
            reason = f"{', '.join(off_table)} left the table"
        elif crossed:
            reason = f"look-alike {', '.join(crossed)} pushed across the goal line"
        else:
            reason = f"red cube {self.goal_line_x_m - target[0]:.3f} m short of the goal line"
        return TaskOutcome(success, reason, float(self.goal_line_x_m - target[0]))


@dataclass(frozen=True)
class TaskOutcome:
    """Result of a success check: ``success``, why, and the red cube's distance to the line (m, <= 0 once across)."""

    success: bool
    reason: str
    target_distance_m: float = field(default=float("nan"))


#: Task name -> its default configuration.
TASKS: dict[str, PushTaskConfig] = {"push_red": PushTaskConfig()}


def get_task(name: str) -> PushTaskConfig:
    """The task called ``name``; ``ValueError`` naming the known tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
