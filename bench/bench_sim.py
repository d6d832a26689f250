"""Benchmark of the simulated cell (all figures from one run, side by side; docs/sim.md).

1. Render time per frame (median ms) per camera and resolution: colour alone and colour + depth, from a copy of
   the state (the renderer's own model and data), shadows / reflections / anti-aliasing off.
2. Simulated seconds per wall second of the served cell, ``fast`` pace: arm idle (no client), and during expert
   episodes with and without rendering (lock-step: the simulator waits while the cameras render).
3. Expert episodes per wall minute with and without rendering (what ``gpc-ros collect`` achieves), and the
   expert's success rate on those episodes.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/bench_sim.py [--episodes 3] [--repeats 15]``. The machine's load
average is printed with the figures: on a shared 2-core machine they scale with it.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import gpc_ros.sim  # noqa: F401  (MUJOCO_GL before mujoco)
from gpc_ros.sim.cameras import CellRenderer
from gpc_ros.sim.cell import CellConfig, ExpertPolicy, SimCell
from gpc_ros.sim.tasks import get_task

RESOLUTIONS = ((96, 96), (160, 120), (320, 240), (640, 480))


def bench_render(repeats: int) -> None:
    import mujoco

    task = get_task("push_red")
    print("| camera | resolution | RGB (ms) | RGB + depth (ms) |\n|---|---|---|---|")
    for camera in ("front", "wrist"):
        for w, h in RESOLUTIONS:
            r = CellRenderer(task, {camera: (w, h)})
            q = r.data.qpos.copy()
            for i, value in enumerate(task.home_joint_positions_rad):
                q[r.model.jnt_qposadr[mujoco.mj_name2id(r.model, mujoco.mjtObj.mjOBJ_JOINT,
                                                        f"robot0_fr3_joint{i + 1}")]] = value
            r.set_state(q)
            r.render(camera)
            rgb, both = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                r.render(camera, depth=False)
                rgb.append(time.perf_counter() - t)
                t = time.perf_counter()
                r.render(camera, depth=True)
                both.append(time.perf_counter() - t)
            r.close()
            print(f"| {camera} | {w}x{h} | {np.median(rgb) * 1e3:.1f} | {np.median(both) * 1e3:.1f} |", flush=True)


def bench_episodes(episodes: int) -> None:
    print("\n| mode | sim s / wall s | expert episodes / wall min | success | mean episode (sim s) |\n"
          "|---|---|---|---|---|")
    for render in (False, True):
        with SimCell(CellConfig(render=render)) as cell:
            if not render:
                t0, w0 = cell.now_s(), time.monotonic()
                time.sleep(5.0)
                print(f"| served cell, arm idle, no client | {(cell.now_s() - t0) / (time.monotonic() - w0):.2f} | "
                      f"| | |", flush=True)
            policy = ExpertPolicy(cell.task)
            results = [cell.run_episode(policy, 500 + i, record=render) for i in range(episodes)]
            sim_s = sum(r.sim_s for r in results)
            wall_s = sum(r.wall_s for r in results)
            wins = sum(r.outcome.success for r in results)
            label = "expert episodes, rendering 2 cameras + cloud" if render else "expert episodes, no rendering"
            print(f"| {label} | {sim_s / wall_s:.2f} | {60.0 * len(results) / wall_s:.2f} | {wins}/{len(results)} | "
                  f"{sim_s / len(results):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)\n")
    bench_render(args.repeats)
    bench_episodes(args.episodes)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
