"""The scripted expert of ``push_red``.

A privileged planner (it reads the cube poses from the simulator) whose targets go through the real path (action
chunks -> FrankaExecutor -> franky -> franky-sim).

Per episode it draws, from its own random generator, what a human demonstrator varies:

* the approach: ``over`` (rise, travel above the cubes, descend behind the red cube) or ``glide`` (one diagonal
  move straight to the pre-push point) — two modes, so demonstrations are multimodal;
* the hover height, travel and push speeds, a start delay, the lateral aim (a few mm off the centre) and how far
  past the line the cube is pushed.

The plan is a list of waypoints joined by minimum-jerk segments (zero velocity at each waypoint); ``chunk(t, H, dt)``
samples the plan at ``t + dt .. t + H dt`` as actions (:mod:`gpc_ros.action_space`): position, the home
orientation (the hand points down), gripper closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpc_ros.action_space import pose_to_action
from gpc_ros.sim.tasks import PushTaskConfig

#: Distance from the TCP to the front of the closed fingers along x (m): the fingertip pads are ~8.5 mm half-thick.
FINGER_HALF_DEPTH_M = 0.010
#: TCP height while pushing (m above the table): the fingertips are ~8 mm below the TCP.
PUSH_HEIGHT_M = 0.030


@dataclass(frozen=True)
class ExpertPlan:
    """Waypoints (K, 3) m and the time (s, from the episode start) each is reached."""

    waypoints_m: np.ndarray
    times_s: np.ndarray
    approach: str

    def position(self, t_s: float | np.ndarray) -> np.ndarray:
        """TCP target at time(s) ``t_s`` (minimum-jerk between waypoints, held after the last)."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        seg = np.clip(np.searchsorted(self.times_s, t, side="right") - 1, 0, len(self.times_s) - 2)
        t0, t1 = self.times_s[seg], self.times_s[seg + 1]
        s = np.clip((t - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)
        blend = 10 * s**3 - 15 * s**4 + 6 * s**5
        out = self.waypoints_m[seg] + blend[:, None] * (self.waypoints_m[seg + 1] - self.waypoints_m[seg])
        return out if np.ndim(t_s) else out[0]

    @property
    def duration_s(self) -> float:
        """Time the plan ends (s from the episode start)."""
        return float(self.times_s[-1])


class PushExpert:
    """Plans and serves the expert's targets for one episode."""

    def __init__(self, task: PushTaskConfig, home_position_m: np.ndarray, home_quat_xyzw: np.ndarray,
                 rng: np.random.Generator) -> None:
        self.task = task
        self.home_position_m = np.asarray(home_position_m, dtype=np.float64)
        self.quat = np.asarray(home_quat_xyzw, dtype=np.float64)
        self.rng = rng
        self.plan: ExpertPlan | None = None

    def plan_episode(self, target_position_m: np.ndarray) -> ExpertPlan:
        """Draw this episode's variations and plan the push of the cube at ``target_position_m``."""
        rng, task = self.rng, self.task
        cube = np.asarray(target_position_m, dtype=np.float64)
        h = task.cube_half_size_m
        aim_y = cube[1] + rng.uniform(-0.006, 0.006)
        gap = rng.uniform(0.015, 0.03)
        behind_x = cube[0] - h - FINGER_HALF_DEPTH_M - gap
        past = rng.uniform(0.02, 0.04)
        end_x = task.goal_line_x_m + past - h - FINGER_HALF_DEPTH_M
        travel_speed = rng.uniform(0.10, 0.16)
        push_speed = rng.uniform(0.07, 0.11)
        delay = rng.uniform(0.0, 0.4)
        pre = np.array([behind_x, aim_y, PUSH_HEIGHT_M])
        end = np.array([end_x, aim_y, PUSH_HEIGHT_M])
        start = self.home_position_m
        approach = "over" if rng.random() < 0.5 else "glide"
        if approach == "over":
            hover = rng.uniform(0.09, 0.14)
            points = [start, start, np.array([behind_x, aim_y, hover]), pre, end]
        else:
            points = [start, start, pre, end]
        times = [0.0, delay]
        for a, b in zip(points[1:-1], points[2:-1]):
            times.append(times[-1] + max(0.4, 1.3 * np.linalg.norm(b - a) / travel_speed))
        times.append(times[-1] + max(0.4, 1.3 * np.linalg.norm(points[-1] - points[-2]) / push_speed))
        self.plan = ExpertPlan(np.asarray(points), np.asarray(times), approach)
        return self.plan

    def chunk(self, t_s: float, horizon: int, dt_s: float, gripper_width_m: float = 0.0) -> np.ndarray:
        """(horizon, ACTION_DIM) actions for ``t_s + dt .. t_s + horizon * dt`` (episode time)."""
        if self.plan is None:
            raise RuntimeError("PushExpert.chunk() before plan_episode()")
        times = t_s + dt_s * np.arange(1, horizon + 1)
        pos = self.plan.position(times)
        return pose_to_action(pos, np.tile(self.quat, (horizon, 1)), np.full(horizon, gripper_width_m))
