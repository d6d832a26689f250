"""Cost of the live views' per-message work (docs/monitoring.md, "Costs"): what the viewer and monitor nodes spend
per message, measured side by side in one run. ``python bench/bench_monitor.py [--repeat N]``.

Per operation: median and 95th percentile wall time (ms) over ``--repeat`` calls, and the share of one core it
takes at the rate the viewer handles that message (camera images at the 10 Hz ``image_rate_hz`` cap, cloud 30 Hz,
joint states 100 Hz with link transforms at the 30 Hz ``tf_rate_hz`` cap, scene and markers at 10 Hz), with a
Foxglove server running and no client.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    from gpc_ros.monitor.description import LinkPoser
    from gpc_ros.monitor.foxglove_view import LiveView, ViewerConfig, urdf_for_foxglove
    from gpc_ros.monitor.scene import Scene
    from gpc_ros.nodes import conversions as cv

    rng = np.random.default_rng(0)
    scene = Scene()
    scene.set_composed(rng.uniform(0.3, 0.6, (16, 3)))
    for name in ("rgb", "pcd"):
        scene.set_parent(name, rng.uniform(0.3, 0.6, (16, 3)))
    for p in rng.uniform(0.3, 0.6, (scene.config.executed_history, 3)):  # a full executed path
        scene.add_executed(p)
    scene.set_envelope((0.25, -0.4, 0.05), (0.75, 0.4, 0.7))
    scene.set_composition("convex", {"rgb": 0.7, "pcd": 0.3})
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image_msg = cv.rgb_to_image_msg(image, cv.seconds_to_stamp(1.0), "camera_color_optical_frame")
    cloud = rng.uniform(0, 1, (1024, 3)).astype(np.float32)
    cloud_msg = cv.pointcloud2_msg(cloud, cv.seconds_to_stamp(1.0), "fr3_link0")
    poser = LinkPoser()
    q = np.array([0.1, -0.4, 0.05, -2.1, 0.0, 1.7, 0.8])
    with LiveView(ViewerConfig(port=0), urdf_for_foxglove()) as view:
        poses = poser.poses(q, 0.04)
        ops = {
            "scene primitives -> MarkerArray (10 Hz)": (lambda: cv.marker_array_from_primitives(
                scene.primitives(), cv.seconds_to_stamp(1.0)), 10),
            "scene -> Foxglove SceneUpdate, logged (10 Hz)": (lambda: view.log_scene(scene.primitives(), 1.0), 10),
            "Image 640x480 msg -> Foxglove RawImage, logged (10 Hz)": (lambda: view.log_image(
                "/camera/camera/color/image_raw", cv.image_msg_to_rgb(image_msg), 1.0, "cam"), 10),
            "PointCloud2 1024 pts -> Foxglove PointCloud, logged (30 Hz)": (lambda: view.log_points(
                cv.pointcloud2_to_numpy(cloud_msg)[0], 1.0, "fr3_link0"), 30),
            "FK of 12 links (LinkPoser) + FrameTransforms logged (30 Hz)": (lambda: view.log_transforms(
                poser.poses(q, 0.04), 1.0), 30),
            "JointStates logged (100 Hz)": (lambda: view.log_joint_states(
                [f"fr3_joint{i}" for i in range(1, 8)], list(q), 1.0), 100),
        }
        del poses
        print(f"bench_monitor: {args.repeat} calls each, load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        print(f"{'operation':62s} {'median ms':>9s} {'p95 ms':>7s} {'core share':>10s}")
        for name, (fn, rate_hz) in ops.items():
            fn()  # warm up
            median, p95 = timed(fn, args.repeat)
            print(f"{name:62s} {median:9.3f} {p95:7.3f} {median * rate_hz / 1e3:9.1%}")


if __name__ == "__main__":
    main()
