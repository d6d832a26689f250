"""Does video decoding dominate training on a LeRobotDataset? Decode cost vs one training step, side by side.

In one run, on a v3.0 folder written by gpc_ros (``--episodes`` x ``--length`` frames of ``--camera`` H x W
video, h264 g=2 as written by :func:`~gpc_ros.policies.lerobot.writer.write_lerobot_dataset`):

* ``train step``: one step of the shipped ``diffusion`` parent (``small``, 96x96 images, batch ``--batch``):
  forward + backward + AdamW + EMA;
* ``per-sample decode``: what a per-item loader does (lerobot's ``__getitem__``): for each of ``--batch`` random
  samples, open the mp4, seek, decode the ``T_obs = 2`` frames, resize to 96x96;
* ``whole-file decode``: gpc_ros's path without a cache: every frame of every file decoded once and resized to
  96x96 (per frame, and for the whole dataset);
* ``cached``: the same frames loaded from :class:`~gpc_ros.policies.lerobot.training_data.FrameCache`.

Prints the times and the ratios to one training step. Run:
``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_lerobot_decode.py --threads 2``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--camera", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    import av

    from gpc_ros.policies.chunk_policy import ACTION_KEY
    from gpc_ros.policies.ema import EMA
    from gpc_ros.policies.factory import make_policy
    from gpc_ros.policies.lerobot.training_data import FrameCache, LeRobotEpisodeDataset
    from gpc_ros.policies.lerobot.writer import write_lerobot_dataset
    from gpc_ros.policies.normalization import fit_min_max
    from gpc_ros.policies.presets import policy_config
    from gpc_ros.policies.synthetic import ReachTaskConfig, make_episode

    h, w = args.camera
    rng = np.random.default_rng(0)
    task = ReachTaskConfig(episode_length=args.length, image_size=96, num_points=64)

    def episodes():
        for _ in range(args.episodes):
            e = make_episode(rng, task)
            e["observation.image"] = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
                                               for f in e["observation.image"]])
            del e["observation.pointcloud"]
            yield e

    with tempfile.TemporaryDirectory() as tmp:
        root = write_lerobot_dataset(Path(tmp) / "ds", episodes(), 10, video_keys=["observation.image"],
                                     max_video_file_frames=args.length * 5)
        frames_total = args.episodes * args.length
        videos = sorted(root.glob("videos/*/*/*.mp4"))

        # ---- whole-file decode at the policy resolution, then cached
        def decode_all():
            cache = FrameCache(Path(tmp) / f"cache-{time.perf_counter_ns()}")
            return LeRobotEpisodeDataset(root, ["observation.image", "observation.state"], 2, 16, image_size=96,
                                         cache=cache)
        whole = median_time(decode_all, max(1, args.repeats // 2))
        cache = FrameCache(Path(tmp) / "cache")
        dataset = LeRobotEpisodeDataset(root, ["observation.image", "observation.state"], 2, 16, image_size=96,
                                        cache=cache)
        cached = median_time(lambda: LeRobotEpisodeDataset(
            root, ["observation.image", "observation.state"], 2, 16, image_size=96, cache=cache), args.repeats)

        # ---- per-sample decode (a per-item loader): open, seek, decode 2 frames, resize
        reader = dataset.reader
        sample_rng = np.random.default_rng(1)

        def per_sample_batch():
            for _ in range(args.batch):
                e = int(sample_rng.integers(reader.num_episodes))
                t = int(sample_rng.integers(reader.episodes[e]["length"]))
                path = reader.video_path(e, "observation.image")
                start = reader.episodes[e]["videos/observation.image/from_timestamp"]
                want = [start + max(t - 1, 0) / reader.fps, start + t / reader.fps]
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    container.seek(int(want[0] / stream.time_base), stream=stream, backward=True, any_frame=False)
                    got = 0
                    for frame in container.decode(stream):
                        ts = float(frame.pts * frame.time_base)
                        if ts + 1e-4 >= want[0]:
                            cv2.resize(frame.to_ndarray(format="rgb24"), (96, 96), interpolation=cv2.INTER_AREA)
                            got += 1
                        if ts + 1e-4 >= want[1] or got >= 2:
                            break
        per_sample = median_time(per_sample_batch, args.repeats)

        # ---- one training step of the shipped RGB parent
        config = policy_config("diffusion", "small", {"action": [3], "observation.state": [3],
                                                      "observation.image": [96, 96, 3]})
        policy = make_policy("diffusion", config, fit_min_max(dataset.values(ACTION_KEY)),
                             fit_min_max(dataset.values("observation.state")))
        ema = EMA(policy, 0.995)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        batch = dataset.batch(np.arange(args.batch) % len(dataset))

        def train_step():
            loss = policy.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(policy)
        train_step()
        step = median_time(train_step, args.repeats)

    print(f"dataset: {args.episodes} episodes x {args.length} frames of {h}x{w} h264 video in {len(videos)} files; "
          f"batch {args.batch}; {args.threads} threads; medians of {args.repeats}")
    print("| what | time | ratio to one training step |")
    print("|---|---|---|")
    print(f"| train step (diffusion small, batch {args.batch}) | {step * 1e3:.0f} ms | 1 |")
    print(f"| per-sample decode for one batch ({args.batch} x 2 frames, seek + decode + resize) | "
          f"{per_sample * 1e3:.0f} ms | {per_sample / step:.2f} |")
    print(f"| whole-file decode + resize, per frame | {whole / frames_total * 1e3:.2f} ms | "
          f"{whole / frames_total / step:.4f} |")
    print(f"| whole-file decode + resize, whole dataset ({frames_total} frames, once per run) | "
          f"{whole:.2f} s | {whole / step:.1f} |")
    print(f"| cached frames, whole dataset (np.load) | {cached * 1e3:.1f} ms | {cached / step:.3f} |")


if __name__ == "__main__":
    main()
