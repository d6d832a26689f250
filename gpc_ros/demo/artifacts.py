"""What a person looks at after ``gpc-ros demo``, made from the run's recording (rosbags; no ROS here).

* :func:`write_video`: the front camera (``/camera/front/color/image_raw``), scaled up, with the measured TCP path
  of the episode so far (white), the latest composed chunk (yellow) and each parent's latest own chunk
  (``/gpc/parents/<name>/chunk``, one colour each) projected with the sim camera's true pinhole and pose
  (:func:`gpc_ros.sim.cameras.camera_intrinsics`, :func:`~gpc_ros.sim.cameras.camera_to_base`). MP4 (H.264 with
  PyAV), or an animated GIF (Pillow) where no H.264 encoder exists.
* :func:`write_plot`: x, y, z of the TCP over (simulated) time: measured (black) against every composed chunk's
  predicted positions (one thin line per chunk), episodes shaded.

Times are the messages' header stamps (the graph's simulated clock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FRONT_IMAGE = "/camera/front/color/image_raw"
#: BGR-free RGB colours: composed chunk, executed path, parents in order.
COMPOSED_RGB = (255, 220, 0)
EXECUTED_RGB = (255, 255, 255)
PARENT_RGB = ((230, 40, 40), (40, 200, 255), (60, 230, 90), (220, 90, 255))


@dataclass
class Chunk:
    """A recorded chunk: its step times (s) and TCP positions (m, fr3_link0)."""

    times_s: np.ndarray
    positions_m: np.ndarray


@dataclass
class RunRecording:
    """The streams the video and the plot need."""

    images: list[tuple[float, np.ndarray]]
    poses: np.ndarray
    """(N, 4): stamp s, x, y, z."""
    composed: list[Chunk]
    parents: dict[str, list[Chunk]]


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _chunk(msg) -> Chunk:
    from gpc_ros.nodes.conversions import chunk_from_multi_dof_trajectory

    c = chunk_from_multi_dof_trajectory(msg)
    return Chunk(c.start_time_s + c.dt_s * np.arange(c.n_steps), np.asarray(c.positions_m, dtype=np.float64))


def load_run(bag: Path, parents: list[str]) -> RunRecording:
    """Read the front images, poses, composed and parent chunks of a demo recording (``BagError`` if unusable)."""
    from gpc_ros.monitor import bag as bagio
    from gpc_ros.nodes.conversions import image_msg_to_rgb

    parent_topics = {name: f"/gpc/parents/{name}/chunk" for name in parents}
    contents = bagio.read_bag(bag, {FRONT_IMAGE: bagio.IMAGE, "/ee_pose": bagio.POSE_STAMPED,
                                    "/gpc/action_chunk": bagio.MULTI_DOF_TRAJECTORY},
                              {t: bagio.MULTI_DOF_TRAJECTORY for t in parent_topics.values()})
    images = sorted(((_stamp(m), image_msg_to_rgb(m)) for _, m in contents.messages[FRONT_IMAGE]),
                    key=lambda item: item[0])
    poses = np.array(sorted((_stamp(m), m.pose.position.x, m.pose.position.y, m.pose.position.z)
                            for _, m in contents.messages["/ee_pose"]))
    composed = sorted((_chunk(m) for _, m in contents.messages["/gpc/action_chunk"]), key=lambda c: c.times_s[0])
    parent_chunks = {name: sorted((_chunk(m) for _, m in contents.messages.get(topic, [])),
                                  key=lambda c: c.times_s[0]) for name, topic in parent_topics.items()}
    return RunRecording(images, poses, composed, parent_chunks)


# ----------------------------------------------------------------------------------------------------------- video
class FrontProjector:
    """fr3_link0 points (m) -> pixels of the front camera image scaled by ``scale``."""

    def __init__(self, width: int, height: int, scale: int) -> None:
        from gpc_ros.action_space import _quat_to_matrix
        from gpc_ros.sim.cameras import camera_intrinsics, camera_to_base

        k = camera_intrinsics("front", width, height)
        self.fx, self.fy, self.cx, self.cy = k.fx, k.fy, k.cx, k.cy
        xyz, quat = camera_to_base("front")
        self.rotation = _quat_to_matrix(np.asarray(quat))  # optical frame -> base
        self.translation = np.asarray(xyz, dtype=np.float64)
        self.scale = scale

    def __call__(self, points_m: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 2) pixel coordinates (float; points behind the camera give NaN)."""
        p = (np.asarray(points_m, dtype=np.float64) - self.translation) @ self.rotation  # = R^T (p - t)
        z = np.where(p[:, 2] > 1e-6, p[:, 2], np.nan)
        u = self.fx * p[:, 0] / z + self.cx
        v = self.fy * p[:, 1] / z + self.cy
        return np.stack([(u + 0.5) * self.scale - 0.5, (v + 0.5) * self.scale - 0.5], axis=1)


def _latest(chunks: list[Chunk], t: float) -> Chunk | None:
    """The newest chunk whose first step is due at or before ``t`` + its lead (published by then)."""
    best = None
    for c in chunks:
        if c.times_s[0] - 0.1 <= t + 1e-9:  # published at the latest one step before its first action is due
            best = c
        else:
            break
    return best


def _polyline(canvas: np.ndarray, pixels: np.ndarray, rgb: tuple[int, int, int], thickness: int) -> None:
    import cv2

    ok = np.all(np.isfinite(pixels), axis=1)
    pts = np.round(pixels[ok]).astype(np.int32)
    if len(pts) >= 2:
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, rgb, thickness, cv2.LINE_AA)


def render_frames(run: RunRecording, episodes: list[dict], scale: int = 3):
    """Yield the annotated RGB frames (one per recorded front image inside an episode)."""
    import cv2

    if not run.images:
        return
    h, w = run.images[0][1].shape[:2]
    project = FrontProjector(w, h, scale)
    for t, rgb in run.images:
        episode = next((e for e in episodes if e["start_s"] - 0.05 <= t <= e["end_s"] + 0.05), None)
        if episode is None:
            continue
        canvas = np.ascontiguousarray(cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR))
        path = run.poses[(run.poses[:, 0] >= episode["start_s"]) & (run.poses[:, 0] <= t), 1:]
        _polyline(canvas, project(path), EXECUTED_RGB, 2)
        for i, (name, chunks) in enumerate(run.parents.items()):
            c = _latest(chunks, t)
            if c is not None and c.times_s[0] >= episode["start_s"] - 0.5:
                _polyline(canvas, project(c.positions_m), PARENT_RGB[i % len(PARENT_RGB)], 1)
        c = _latest(run.composed, t)
        if c is not None and c.times_s[0] >= episode["start_s"] - 0.5:
            _polyline(canvas, project(c.positions_m), COMPOSED_RGB, 2)
        label = (f"ep {episode['index'] + 1} seed {episode['seed']} {episode['policy']}  "
                 f"t={t - episode['start_s']:4.1f}s")
        cv2.putText(canvas, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        legend = [("executed", EXECUTED_RGB), ("composed", COMPOSED_RGB)] + [
            (name, PARENT_RGB[i % len(PARENT_RGB)]) for i, name in enumerate(run.parents)]
        y = canvas.shape[0] - 8
        for text, colour in reversed(legend):
            cv2.putText(canvas, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
            y -= 14
        if t >= episode["end_s"] - 0.15:
            verdict = "SUCCESS" if episode["success"] else "no success"
            cv2.putText(canvas, verdict, (canvas.shape[1] - 110, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (80, 255, 80) if episode["success"] else (255, 120, 120), 1, cv2.LINE_AA)
        yield canvas


def write_video(run: RunRecording, episodes: list[dict], path_stem: Path, fps: int = 10) -> Path:
    """Write the annotated front-camera video: ``<stem>.mp4`` (H.264), else ``<stem>.gif``; returns the path."""
    frames = render_frames(run, episodes)
    first = next(frames, None)
    if first is None:
        raise ValueError("no front-camera frame was recorded inside an episode: nothing to put in the video")
    try:
        import av

        if "libx264" not in av.codecs_available:
            raise ImportError("PyAV has no libx264 encoder")
    except ImportError as exc:
        logger.warning("no H.264 encoder (%s): writing a GIF", exc)
        from PIL import Image

        path = path_stem.with_suffix(".gif")
        images = [Image.fromarray(first)] + [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    path = path_stem.with_suffix(".mp4")
    tmp = path.with_name(path.name + ".partial.mp4")
    container = av.open(str(tmp), "w")
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in (first, *frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------------------ plot
def write_plot(run: RunRecording, episodes: list[dict], path: Path) -> Path:
    """The PNG of measured vs predicted TCP positions over time (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    t_first = episodes[0]["start_s"] if episodes else (run.poses[0, 0] if len(run.poses) else 0.0)
    for axis, name, ax in zip(range(3), "xyz", axes):
        for e in episodes:
            ax.axvspan(e["start_s"] - t_first, e["end_s"] - t_first, color="green" if e["success"] else "grey",
                       alpha=0.08)
        for i, (pname, chunks) in enumerate(run.parents.items()):
            colour = np.array(PARENT_RGB[i % len(PARENT_RGB)]) / 255.0
            for k, c in enumerate(chunks):
                ax.plot(c.times_s - t_first, c.positions_m[:, axis], color=colour, lw=0.5, alpha=0.35,
                        label=f"{pname} chunks" if k == 0 else None)
        for k, c in enumerate(run.composed):
            ax.plot(c.times_s - t_first, c.positions_m[:, axis], color="#e0a000", lw=0.9, alpha=0.7,
                    label="composed chunks (predicted)" if k == 0 else None)
        if len(run.poses):
            ax.plot(run.poses[:, 0] - t_first, run.poses[:, 1 + axis], color="black", lw=1.3,
                    label="executed (measured TCP)")
        ax.set_ylabel(f"TCP {name} (m)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[0].set_title("push_red: executed vs predicted chunks (shaded: episodes; green = success)")
    axes[-1].set_xlabel("simulated time since the first episode (s)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
