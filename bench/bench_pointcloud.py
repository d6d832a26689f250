#!/usr/bin/env python3
"""Cost of the depth -> point-cloud chain and camera_node -> pointcloud_node latency (figures: docs/perception.md).

1. 640x480 depth of a synthetic cell (table + box, the example camera pose of config/pointcloud.yaml) ->
   N = 1024 points in fr3_link0: median ms per stage and for the whole chain, for each variant side by side
   (numpy precomputed-ray back-projection vs open3d legacy create_from_depth_image; numpy vs open3d voxel grid;
   open3d legacy FPS vs a numpy reference FPS), interleaved in one run so load changes hit every variant alike.
2. ``PlaybackSource`` alone (in process): frames per second reading a 640x480 recording, paced and unpaced.
3. End to end across processes: a 640x480 recording played by camera_node, clouds built by TWO pointcloud_nodes
   side by side (``image_qos`` reliable and best_effort, in their own namespaces), all real processes on a
   private ROS domain; latency = arrival of the PointCloud2 at a third process minus its header stamp (the frame's
   capture time mapped to ROS time), next to the same figure for the depth image; and the cloud rate as a ratio:
   clouds per depth image received by this (reliable) subscriber. A node that loses no frame and keeps up has a
   ratio of ~1; lost images show up as a lower ratio.

Run: ``.venv/bin/python bench/bench_pointcloud.py [--repeats N] [--seconds S]``. Absolute times depend on the
machine and its load (printed); compare variants within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.pointcloud import CameraView, PointCloudConfig, PointCloudPipeline
from gpc_ros.perception.synthetic_scene import Box, look_at, render_depth

K_640 = CameraIntrinsics(640, 480, 605.0, 605.0, 319.5, 239.5)  # a D435 colour camera at 640x480
POSE = look_at([1.1, 0.0, 0.6], [0.55, 0.0, 0.0])
BOXES = [Box((0.5, -0.05, 0.0), (0.6, 0.05, 0.12)), Box((0.35, 0.15, 0.0), (0.42, 0.25, 0.2), (40, 200, 40))]
FULL = dict(pixel_stride=1, voxel_size_m=0.005)  # every pixel, 5 mm voxels
VARIANTS = {
    "numpy rays+voxel, open3d FPS; stride 2, 10 mm (default)": dict(backend="numpy", fps_backend="open3d"),
    "open3d legacy all stages; stride 2, 10 mm": dict(backend="open3d", fps_backend="open3d"),
    "numpy rays+voxel, open3d FPS; stride 1, 5 mm": dict(backend="numpy", fps_backend="open3d", **FULL),
    "open3d legacy all stages; stride 1, 5 mm": dict(backend="open3d", fps_backend="open3d", **FULL),
    "numpy rays+voxel, open3d FPS; stride 1, 10 mm": dict(backend="numpy", fps_backend="open3d", pixel_stride=1),
    "numpy all stages (numpy FPS); stride 2, 10 mm": dict(backend="numpy", fps_backend="numpy"),
}


def stage_times(pipeline: PointCloudPipeline, view: CameraView, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    points, colors = pipeline.back_project(view)
    t1 = time.perf_counter()
    pipeline.crop(points, colors)
    t2 = time.perf_counter()
    points, colors = pipeline.back_project(view, crop=True)  # what process() runs: fused for numpy
    t3 = time.perf_counter()
    points, colors = pipeline.voxel_down_sample(points, colors)
    t4 = time.perf_counter()
    pipeline.farthest_point_indices(points, n)
    t5 = time.perf_counter()
    pipeline.process([view])
    t6 = time.perf_counter()
    return {"depth->cloud": t1 - t0, "crop": t2 - t1, "cloud+crop": t3 - t2, "voxel": t4 - t3, "fps": t5 - t4,
            "full chain": t6 - t5, "points": len(points)}


def bench_chain(repeats: int) -> None:
    depth, _ = render_depth(K_640, POSE, 0.0, BOXES)
    view = CameraView(depth, K_640, POSE)
    pipelines = {name: PointCloudPipeline(PointCloudConfig(num_points=1024, **kw)) for name, kw in VARIANTS.items()}
    samples: dict[str, list[dict]] = {name: [] for name in pipelines}
    for name, pipeline in pipelines.items():  # warm-up: ray caches, open3d first-call costs
        pipeline.process([view])
    for r in range(repeats):
        for name, pipeline in pipelines.items():
            if "numpy FPS" in name and r >= max(3, repeats // 5):
                continue  # the reference FPS is slow; a few samples suffice
            samples[name].append(stage_times(pipeline, view, 1024))
    valid = int((depth > 0).sum())
    print(f"\n1) 640x480 depth ({valid} valid px) -> N=1024 points in fr3_link0; median ms over runs")
    stages = ["depth->cloud", "crop", "cloud+crop", "voxel", "fps", "full chain"]
    print("(cloud+crop: the two stages as process() runs them, fused in one pass for numpy)")
    print(f"{'variant':56s} " + " ".join(f"{s:>12s}" for s in stages) + f" {'voxels':>7s} {'runs':>5s}")
    for name, rows in samples.items():
        medians = [statistics.median(row[s] for row in rows) * 1e3 for s in stages]
        print(f"{name:56s} " + " ".join(f"{m:12.2f}" for m in medians)
              + f" {rows[0]['points']:7d} {len(rows):5d}")


def bench_playback(seconds: float) -> None:
    """Frames per second delivered by PlaybackSource on a 640x480 recording, paced and unpaced (looping)."""
    from gpc_ros.perception.playback_source import PlaybackConfig, PlaybackSource
    from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig

    print(f"\n2) PlaybackSource alone, 640x480 recording of 30 frames at 30 Hz, looping, {seconds:.0f} s each")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell_640x480.db3"
        depth, color = render_depth(K_640, POSE, 0.0, BOXES)
        with RealSenseRecorder(RecordingConfig(path, K_640)) as recorder:
            for i in range(30):
                recorder.write(depth, color, i / 30)
        for paced in (True, False):
            frames = 0
            with PlaybackSource(PlaybackConfig(path, loop=True, pace_realtime=paced)) as source:
                source.read(5.0)  # first frame: opening costs
                start = time.monotonic()
                while time.monotonic() < start + seconds:
                    frames += source.read(1.0) is not None
                elapsed = time.monotonic() - start
            print(f"{'paced' if paced else 'unpaced':8s} {frames / elapsed:7.1f} frames/s ({frames} frames)")


def bench_graph(seconds: float) -> None:
    from gpc_ros.leases import acquire
    from gpc_ros.paths import config_file
    from gpc_ros.perception.recorder import RealSenseRecorder, RecordingConfig
    from gpc_ros.ros_env import MAX_SAFE_DOMAIN_ID, graph_env

    with tempfile.TemporaryDirectory() as tmp, acquire("ros-domain", range(1, MAX_SAFE_DOMAIN_ID + 1)) as lease:
        path = Path(tmp) / "cell_640x480.db3"
        depth, color = render_depth(K_640, POSE, 0.0, BOXES)
        with RealSenseRecorder(RecordingConfig(path, K_640)) as recorder:
            for i in range(30):
                recorder.write(depth, color, i / 30)
        env = graph_env(lease.value)
        os.environ.update(env)
        common = ["--ros-args", "--params-file"]
        procs = [
            subprocess.Popen([sys.executable, "-m", "gpc_ros.nodes.camera_node", *common,
                              str(config_file("camera.yaml")), "-p", "source:=playback", "-p",
                              f"recording_path:={path}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ] + [
            subprocess.Popen([sys.executable, "-m", "gpc_ros.nodes.pointcloud_node", *common,
                              str(config_file("pointcloud.yaml")), "-r", f"__ns:=/{qos}", "-p", f"image_qos:={qos}",
                              "-p", f"output_topic:=/gpc/points_{qos}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / f"{qos}.log", "w"))
            for qos in QOS_VARIANTS
        ]
        try:
            latencies = measure_latency(lease.value, seconds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for qos in QOS_VARIANTS:
            log_tail = (Path(tmp) / f"{qos}.log").read_text()[-600:]
            if log_tail.strip():
                print(f"pointcloud_node ({qos}) log tail:\n{log_tail}")
    print(f"\n3) camera_node -> 2 pointcloud_nodes across processes (640x480 at 30 Hz, N=1024), {seconds:.0f} s")
    images = len(latencies[IMAGE_KEY])
    for name, values in latencies.items():
        if values:
            ms = np.array(values) * 1e3
            per = "depth images" if name == IMAGE_BE_KEY else "clouds"
            ratio = "" if name == IMAGE_KEY else f"   {len(ms) / max(images, 1):.2f} {per} per reliable depth image"
            print(f"{name:52s} median {np.median(ms):7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms   "
                  f"({len(ms)} msgs, {len(ms) / seconds:.1f} Hz){ratio}")
        else:
            print(f"{name:52s} no messages")


QOS_VARIANTS = ("reliable", "best_effort")
IMAGE_KEY = "depth image (camera_node -> here, reliable)"
IMAGE_BE_KEY = "depth image (camera_node -> here, best_effort)"


def measure_latency(domain_id: int, seconds: float) -> dict[str, list[float]]:
    """Arrival minus header stamp (s) of every depth image and every cloud of each QoS variant."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    from gpc_ros.nodes.conversions import stamp_to_seconds
    from gpc_ros.nodes.pointcloud_node import CLOUD_QOS, IMAGE_QOS

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = Node("bench_latency", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    cloud_keys = {qos: f"cloud, image_qos={qos} (-> pointcloud_node -> here)" for qos in QOS_VARIANTS}
    out: dict[str, list[float]] = {IMAGE_KEY: [], **{key: [] for key in cloud_keys.values()}}
    started = {"t": None}

    def record(key):
        def callback(msg) -> None:
            if started["t"] is not None:
                now = node.get_clock().now().nanoseconds * 1e-9
                out[key].append(now - stamp_to_seconds(msg.header.stamp))
        return callback

    out[IMAGE_BE_KEY] = []
    for key, qos in ((IMAGE_KEY, "reliable"), (IMAGE_BE_KEY, "best_effort")):
        node.create_subscription(Image, "/camera/camera/aligned_depth_to_color/image_raw", record(key),
                                 IMAGE_QOS[qos])
    for qos, key in cloud_keys.items():
        node.create_subscription(PointCloud2, f"/gpc/points_{qos}", record(key), CLOUD_QOS)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and min(node.count_publishers(f"/gpc/points_{q}") for q in QOS_VARIANTS) == 0:
        executor.spin_once(timeout_sec=0.1)
    warmup = time.monotonic() + 3.0  # discovery, first-frame costs
    while time.monotonic() < warmup:
        executor.spin_once(timeout_sec=0.05)
    started["t"] = time.monotonic()
    while time.monotonic() < started["t"] + seconds:
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="runs per variant (chain benchmark)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window of the graph benchmark (s)")
    parser.add_argument("--skip-graph", action="store_true", help="only the in-process chain benchmark")
    parser.add_argument("--skip-chain", action="store_true", help="only the across-processes benchmark")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}, load average (1/5/15 min): {os.getloadavg()}")
    if not args.skip_chain:
        bench_chain(args.repeats)
        bench_playback(min(args.seconds, 5.0))
    if not args.skip_graph:
        bench_graph(args.seconds)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
