"""Video files of a LeRobotDataset v3.0 with PyAV: encode episodes into one mp4, decode it back, compare.

Encoding: ``libx264`` (``h264``), ``yuv420p``, a key frame every ``gop`` frames (LeRobot records with ``g=2`` so
that any frame decodes fast), no B-frames, constant rate factor ``crf``; frame ``n`` of the file has the
presentation time ``n / fps`` exactly (time base ``1/fps``), which is what LeRobot's decoders look up
(``round(ts * fps)``, then check ``|pts - ts| < tolerance_s``). Several episodes go into one file one after the
other; an episode's ``from_timestamp`` is (frames before it in the file) / fps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_CODEC = "libx264"
CODEC_NAMES = {"libx264": "h264", "libsvtav1": "av1", "mpeg4": "mpeg4"}


def encode_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int, codec: str = DEFAULT_CODEC,
                 crf: int = 18, gop: int = 2) -> int:
    """Encode ``(H, W, 3)`` uint8 RGB frames into ``path`` (mp4); returns the number of frames written."""
    import av

    if codec not in CODEC_NAMES:
        raise ValueError(f"video codec must be one of {sorted(CODEC_NAMES)}; got {codec!r}")
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            frame = np.asarray(frame)
            if stream is None:
                height, width = frame.shape[:2]
                if height % 2 or width % 2:
                    raise ValueError(f"{path}: yuv420p video needs an even width and height; frames are "
                                     f"{width}x{height}")
                options = {"g": str(gop), "crf": str(crf)}
                if codec == "libx264":
                    options.update({"bf": "0", "preset": "medium"})
                stream = container.add_stream(codec, rate=Fraction(int(fps)), options=options)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.time_base = Fraction(1, int(fps))
                stream.codec_context.time_base = Fraction(1, int(fps))
            if frame.dtype != np.uint8 or frame.shape != (stream.height, stream.width, 3):
                raise ValueError(f"{path}: frame {count} must be ({stream.height}, {stream.width}, 3) uint8; got "
                                 f"{frame.shape} {frame.dtype}")
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = count
            video_frame.time_base = Fraction(1, int(fps))
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return count


def video_info(path: str | os.PathLike) -> dict:
    """The ``info`` block LeRobot stores for a video feature in ``meta/info.json``."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec.canonical_name,
                "video.pix_fmt": stream.pix_fmt, "video.is_depth_map": False, "video.fps": int(stream.base_rate),
                "video.channels": 3, "has_audio": bool(container.streams.audio)}


def decode_video(path: str | os.PathLike, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All frames of ``path`` -> ``(frames (N, H, W, 3) uint8 RGB, pts_seconds (N,))``.

    With ``size``, each frame is resized to ``size x size`` (``cv2.INTER_AREA``) as it is decoded, so only the small
    frames are kept.
    """
    import av

    frames, pts = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            if size is not None and rgb.shape[:2] != (size, size):
                import cv2

                rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            frames.append(rgb)
            pts.append(float(frame.pts * frame.time_base) if frame.pts is not None else np.nan)
    if not frames:
        return np.zeros((0, size or 0, size or 0, 3), np.uint8), np.zeros(0)
    return np.stack(frames), np.asarray(pts)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images or stacks (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def video_path(root: Path, template: str, key: str, chunk: int, file: int) -> Path:
    """``root / template`` filled in (LeRobot's ``video_path`` of ``meta/info.json``)."""
    return root / template.format(video_key=key, chunk_index=chunk, file_index=file)
