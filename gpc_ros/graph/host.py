"""A policy host without ROS: one parent, its observation window, one encoding per chunk, per-step predictions.

The host node (``gpc_ros.nodes.policy_host_node``) feeds :class:`HostCore` with frames and robot states from its
subscriptions and answers the composer's requests (see :mod:`gpc_ros.graph.protocol`); the composer's in-process
deployment calls the same object directly. A parent comes from a checkpoint (:func:`gpc_ros.policies.load_parent`)
or, the bring-your-own-parent path, from any ``module:function`` returning a
:class:`~gpc_ros.compose.parent.ParentPolicy`.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from gpc_ros.compose.parameterization import Parameterization
from gpc_ros.compose.parent import (
    ActionNormalization,
    ParentPolicy,
    encoding_batch_size,
    repeat_encoding,
)
from gpc_ros.compose.schedule import FlowTime, VPTime
from gpc_ros.graph import protocol
from gpc_ros.graph.affinity import parse_cpu_list

logger = logging.getLogger(__name__)

MODALITIES = ("auto", "image", "pointcloud", "state")


@dataclass(frozen=True)
class HostConfig:
    """One policy host: which parent, what it observes (the policy_host_node's parameters)."""

    # --- the parent
    name: str = "parent"
    """Parent name: topics /gpc/hosts/<name>/..., weights are given per name."""
    checkpoint: str = ""
    """Checkpoint folder written by gpc-ros train (loaded with gpc_ros.policies.load_parent); or set factory."""
    factory: str = ""
    """Bring-your-own parent: 'package.module:function' returning a ParentPolicy (called with factory_kwargs)."""
    factory_kwargs: str = "{}"
    """JSON object of keyword arguments for factory."""
    device: str = "cpu"
    """torch device of the parent."""
    torch_threads: int = 1
    """torch intra-op threads of this host (hosts on one machine should not fight for its cores)."""
    trace_head: bool = False
    """Checkpoint parents: run the U-Net head as a frozen TorchScript trace (bit-identical, ~0.55x the time of a
    small head's step, and two in-process hosts' traced heads overlap in the composer's threads; docs/graph.md).
    The first step of each new batch shape traces (a few hundred ms)."""
    cpu_affinity: str = ""
    """CPUs this host's process runs on, taskset syntax ('1', '0,2', '2-3'); '' = any. Hosts on one machine: one
    core each, so their steps overlap (docs/graph.md); ignored for hosts inside the composer's process."""
    # --- what it observes (a checkpoint says modality, obs_horizon and shapes itself; 'auto' reads them there)
    modality: Literal["auto", "image", "pointcloud", "state"] = "auto"
    """auto (from the checkpoint) | image (RGB camera) | pointcloud (/gpc/points) | state (ee_pose only)."""
    obs_horizon: int = 0
    """Frames per observation window; 0 = the checkpoint's (1 for a factory parent)."""
    state_dim: int = -1
    """Robot-state dims (ee_pose position xyz in m = 3; 0 = none); -1 = the checkpoint's (3 for a factory)."""
    camera_name: str = "camera"
    """RGB frames from /camera/<camera_name>/color/image_raw (modality image)."""
    points_topic: str = "/gpc/points"
    """Point clouds (modality pointcloud), sensor_msgs/PointCloud2 in fr3_link0."""
    window_size: int = 64
    """Frames kept to answer an encode request for a past observation time."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"HostConfig.name must be a non-empty [A-Za-z0-9_] name (it is part of topic names); "
                             f"got {self.name!r}")
        if bool(self.checkpoint) == bool(self.factory):
            raise ValueError(f"HostConfig: set exactly one of checkpoint and factory; got checkpoint="
                             f"{self.checkpoint!r}, factory={self.factory!r}")
        if self.factory and ":" not in self.factory:
            raise ValueError(f"HostConfig.factory must be 'module:function'; got {self.factory!r}")
        try:
            kwargs = json.loads(self.factory_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"HostConfig.factory_kwargs must be a JSON object; got {self.factory_kwargs!r} "
                             f"({exc})") from None
        if not isinstance(kwargs, dict):
            raise ValueError(  # noqa: TRY004 (a value read from a parameter: JSON of the wrong shape)
                f"HostConfig.factory_kwargs must be a JSON object; got {self.factory_kwargs!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"HostConfig.modality must be one of {MODALITIES}; got {self.modality!r}")
        if self.factory and self.modality == "auto":
            raise ValueError("HostConfig.modality must be image, pointcloud or state for a factory parent "
                             "(only a checkpoint says its own modality)")
        if not isinstance(self.trace_head, bool):
            raise ValueError(f"HostConfig.trace_head must be true or false; got {self.trace_head!r}")
        if self.trace_head and self.factory:
            raise ValueError("HostConfig.trace_head applies to checkpoint parents only (a factory parent brings its "
                             f"own denoiser); got trace_head=True with factory={self.factory!r}")
        parse_cpu_list(self.cpu_affinity, "HostConfig.cpu_affinity")
        for attr, low in (("obs_horizon", 0), ("state_dim", -1), ("torch_threads", 1), ("window_size", 1)):
            value = getattr(self, attr)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ValueError(f"HostConfig.{attr} must be an int >= {low}; got {value!r}")


@dataclass(frozen=True)
class Observing:
    """What the loaded parent observes (resolved from the checkpoint or the config)."""

    modality: str
    obs_horizon: int
    state_dim: int
    image_size: int = 0
    num_points: int = 0
    point_dim: int = 3
    """3: the parent reads ``xyz``; 6: ``xyz`` then ``rgb`` in [0, 1] (needs a coloured cloud)."""


def load_host_parent(config: HostConfig) -> tuple[ParentPolicy, Observing]:
    """The configured parent and what it observes."""
    if config.checkpoint:
        from gpc_ros.policies import load_policy
        from gpc_ros.policies.registry import resolve_checkpoint

        policy = load_policy(resolve_checkpoint(config.checkpoint), config.device)  # a folder or a shipped name
        obs = policy.config.observation
        modality = obs.modality if config.modality == "auto" else config.modality
        observing = Observing(modality, config.obs_horizon or obs.obs_horizon,
                              obs.state_dim if config.state_dim < 0 else config.state_dim,
                              obs.image.image_size, obs.pointcloud.num_points, obs.pointcloud.point_dim)
        return policy.as_parent(config.name, trace_head=config.trace_head), observing
    module_name, _, function = config.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"HostConfig.factory {config.factory!r} cannot be loaded: {exc}") from None
    parent = factory(name=config.name, **json.loads(config.factory_kwargs))
    if not isinstance(parent, ParentPolicy):
        raise TypeError(f"HostConfig.factory {config.factory!r} returned {type(parent).__name__}, which does not "
                         f"provide the ParentPolicy contract (name, parameterization, action_horizon, action_dim, "
                         f"normalization, time_convention, encode, predict)")
    observing = Observing(config.modality, config.obs_horizon or 1, 3 if config.state_dim < 0 else config.state_dim,
                          int(getattr(parent, "image_size", 0)), int(getattr(parent, "num_points", 0)))
    return parent, observing


# ---------------------------------------------------------------------------------------------------------- announce
def announcement(parent: ParentPolicy, observing: Observing) -> dict[str, Any]:
    """What the host tells the composer about its parent (JSON-able; see docs/protocol.md)."""
    convention = parent.time_convention
    if isinstance(convention, VPTime):
        time = {"kind": "vp", "alphas_cumprod": [float(v) for v in convention.alphas_cumprod],
                "integer_timesteps": bool(convention.integer_timesteps)}
    elif isinstance(convention, FlowTime):
        time = {"kind": "flow", "time_scale": float(convention.time_scale)}
    else:
        raise TypeError(f"parent {parent.name!r}: time convention {convention!r} cannot be announced "
                         f"(VPTime and FlowTime can)")
    norm = parent.normalization
    return {"name": parent.name, "parameterization": Parameterization.parse(parent.parameterization).value,
            "time_convention": time, "action_horizon": int(parent.action_horizon),
            "action_dim": int(parent.action_dim),
            "normalization": {"kind": norm.kind, "offset": list(norm.offset), "scale": list(norm.scale)},
            "modality": observing.modality, "obs_horizon": observing.obs_horizon}


def time_convention_from(announced: dict[str, Any]):
    """Rebuild a parent's time convention from its announcement.

    Args:
        announced: The announcement's ``time_convention`` entry (``kind`` ``vp`` or ``flow``).

    Returns:
        A :class:`VPTime` or :class:`FlowTime`.

    Raises:
        ValueError: An unknown ``kind``.
    """
    if announced["kind"] == "vp":
        return VPTime(np.asarray(announced["alphas_cumprod"], dtype=np.float64), announced["integer_timesteps"])
    if announced["kind"] == "flow":
        return FlowTime(announced["time_scale"])
    raise ValueError(f"unknown announced time convention {announced!r}")


def normalization_from(announced: dict[str, Any]) -> ActionNormalization:
    """Rebuild a parent's action normalization from the announcement's ``normalization`` entry."""
    return ActionNormalization(announced["kind"], tuple(announced["offset"]), tuple(announced["scale"]))


# -------------------------------------------------------------------------------------------------- observations
class ObservationWindow:
    """Stamped frames and robot states; the window of the last ``obs_horizon`` frames at a given time."""

    def __init__(self, observing: Observing, size: int) -> None:
        self.observing = observing
        self.frames: deque[tuple[float, np.ndarray]] = deque(maxlen=size)
        self.states: deque[tuple[float, np.ndarray]] = deque(maxlen=max(size, 256))
        self._lock = threading.Lock()

    def add_frame(self, stamp_s: float, frame: np.ndarray) -> None:
        """Add one frame (image ``(S, S, 3)`` uint8 or points ``(N, 3)`` m) stamped ``stamp_s`` (s)."""
        with self._lock:
            self.frames.append((stamp_s, frame))

    def add_state(self, stamp_s: float, state: np.ndarray) -> None:
        """Add one robot state stamped ``stamp_s`` (s); with modality ``state`` it is also a frame.

        ``state`` is in the action layout of :mod:`gpc_ros.action_space` (TCP position m, 6-D rotation, gripper m) or
        a prefix of it; a window hands the parent its first ``state_dim`` numbers.
        """
        with self._lock:
            self.states.append((stamp_s, np.asarray(state, dtype=np.float32)))
            if self.observing.modality == "state":
                self.frames.append((stamp_s, self.states[-1][1]))

    def _state_at(self, stamp_s: float) -> np.ndarray | None:
        best = None
        for t, s in self.states:
            if t <= stamp_s + 1e-9:
                best = s
            else:
                break
        return best if best is not None else (self.states[0][1] if self.states else None)

    def at(self, time_s: float) -> tuple[dict[str, np.ndarray], float] | None:
        """``(observation, stamp of its newest frame)`` of the frames at or before ``time_s``; None if none."""
        o = self.observing
        with self._lock:
            frames = [(t, f) for t, f in self.frames if t <= time_s + 1e-9]
            if not frames:
                return None
            window = frames[-o.obs_horizon:]
            window = [window[0]] * (o.obs_horizon - len(window)) + window  # too few yet: repeat the oldest
            stamp = window[-1][0]
            out: dict[str, np.ndarray] = {}
            if o.state_dim:
                states = [self._state_at(t) for t, _ in window]
                if any(s is None for s in states):
                    return None
                out["observation.state"] = np.stack([s[:o.state_dim] for s in states])[None]
            if o.modality == "image":
                out["observation.image"] = np.stack([f for _, f in window])[None]
            elif o.modality == "pointcloud":
                out["observation.pointcloud"] = np.stack([f for _, f in window])[None]
            return out, stamp


def fit_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): centre square crop, then area resize (what the parent was trained on).

    The very function the demonstrations were recorded with (:func:`gpc_ros.sim.observation.policy_image`, PIL's box
    filter): OpenCV's INTER_AREA differs from it by up to 140 grey levels per pixel at non-integer scales.
    """
    from gpc_ros.sim.observation import policy_image

    return policy_image(rgb, size)


def fit_points(points: np.ndarray, n: int) -> np.ndarray:
    """(N', D) -> (n, D) by evenly spaced indices (the cloud is already farthest-point sampled upstream)."""
    if n <= 0 or points.shape[0] == n:
        return points
    return points[np.linspace(0, points.shape[0] - 1, n).round().astype(int)]


def cloud_frame(points_m: np.ndarray, colors_rgb: np.ndarray | None, observing: Observing) -> np.ndarray:
    """A received cloud (points in m, uint8 colours or None) -> the parent's frame (see :func:`fit_cloud`)."""
    points = np.asarray(points_m, np.float32).reshape(-1, 3)
    if colors_rgb is not None:
        points = np.concatenate([points, np.asarray(colors_rgb, np.float32).reshape(-1, 3) / np.float32(255.0)], 1)
    return fit_cloud(points, observing)


def fit_cloud(cloud: np.ndarray, observing: Observing) -> np.ndarray:
    """``(N', 3)`` xyz or ``(N', 6)`` xyz + rgb in [0, 1] -> ``(num_points, point_dim)``, the parent's frame.

    An xyz parent reads the first three columns. Raises ``ValueError`` when the parent reads colour (``point_dim``
    6) and the cloud has none.
    """
    cloud = np.asarray(cloud, np.float32)
    if observing.point_dim == 6 and cloud.shape[-1] != 6:
        raise ValueError("this parent reads coloured points (point_dim 6) but the cloud has no rgb field; "
                         "run pointcloud_node with with_color:=true")
    return fit_points(cloud[:, :observing.point_dim], observing.num_points)


# ------------------------------------------------------------------------------------------------------- the core
class HostCore:
    """One parent behind the exchange: ``encode`` once per chunk, ``predict`` once per step (thread-safe)."""

    def __init__(self, parent: ParentPolicy, observing: Observing, window_size: int = 64) -> None:
        self.parent = parent
        self.observing = observing
        self.window = ObservationWindow(observing, window_size)
        self._lock = threading.Lock()
        self._encoded: tuple[int, Any, tuple[int, int]] | None = None  # correlation id, encoding, stamp
        self.nan_injection = False  # tests and fault drills: answer every prediction with NaN

    @property
    def name(self) -> str:
        """The hosted parent's name."""
        return self.parent.name

    def announcement(self) -> dict[str, Any]:
        """What this host tells the composer about its parent (see :func:`announcement`)."""
        return announcement(self.parent, self.observing)

    def encode(self, correlation_id: int, time_s: float) -> tuple[int, tuple[int, int]]:
        """Encode the window at ``time_s`` for ``correlation_id``; ``(status, stamp of the newest frame)``."""
        found = self.observe(time_s)
        if found is None:
            return protocol.NO_OBSERVATION, (0, 0)
        observation, stamp = found
        try:
            with torch.no_grad():
                encoding = self.parent.encode(observation)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            logger.warning("host %s: encoding failed: %s", self.name, exc)
            return protocol.HOST_ERROR, stamp
        self.store_encoding(correlation_id, encoding, stamp)
        return protocol.OK, stamp

    def observe(self, time_s: float) -> tuple[Any, tuple[int, int]] | None:
        """The window at ``time_s`` and the stamp of its newest frame (``(sec, nanosec)``), or None (no frame)."""
        found = self.window.at(time_s)
        if found is None:
            return None
        observation, stamp_s = found
        return observation, protocol.split_stamp(stamp_s)

    def store_encoding(self, correlation_id: int, encoding: Any, stamp: tuple[int, int]) -> None:
        """Keep ``encoding`` (of the observation stamped ``stamp``) for the steps of chunk ``correlation_id``."""
        with self._lock:
            self._encoded = (correlation_id, encoding, stamp)

    def encode_external(self, correlation_id: int, observation: Any, stamp_s: float) -> None:
        """Encode a given observation (benchmarks and the reference path) instead of the window."""
        with torch.no_grad():
            encoding = self.parent.encode(observation)
        with self._lock:
            self._encoded = (correlation_id, encoding, protocol.split_stamp(stamp_s))

    def predict(self, correlation_id: int, x_t: torch.Tensor, parent_time: float) -> tuple[int, torch.Tensor | None]:
        """The parent's prediction for ``x_t`` ``(M, H, D)`` at its own ``parent_time``; ``(status, prediction)``."""
        status, encoding = self.step_encoding(correlation_id, x_t)
        if status != protocol.OK:
            return status, None
        try:
            with torch.no_grad():
                prediction = self.parent.predict(x_t, parent_time, encoding)
        except (ValueError, RuntimeError) as exc:
            logger.warning("host %s: prediction failed: %s", self.name, exc)
            return protocol.HOST_ERROR, None
        return self.step_result(prediction)

    def step_encoding(self, correlation_id: int, x_t: torch.Tensor) -> tuple[int, Any]:
        """``(status, encoding)``: the encoding of ``correlation_id`` repeated to ``x_t``'s rows, for one step."""
        with self._lock:
            encoded = self._encoded
        if encoded is None or encoded[0] != correlation_id:
            return protocol.UNKNOWN_CORRELATION, None
        encoding = encoded[1]
        batch = encoding_batch_size(encoding)
        rows = int(x_t.shape[0])
        if rows % batch:
            return protocol.HOST_ERROR, None
        return protocol.OK, repeat_encoding(encoding, rows // batch)

    def step_result(self, prediction: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """``(status, prediction)`` as a step answers the parent's ``prediction``.

        NaN when :attr:`nan_injection` is on; :data:`~gpc_ros.graph.protocol.NON_FINITE` when not finite.
        """
        if self.nan_injection:
            prediction = torch.full_like(prediction, math.nan)
        if not bool(torch.isfinite(prediction).all()):
            return protocol.NON_FINITE, None
        return protocol.OK, prediction

    def answer(self, request: protocol.Exchange) -> protocol.Exchange:
        """The reply to one unpacked request (the remote path)."""
        if request.kind == protocol.KIND_ENCODE:
            status, stamp = self.encode(request.correlation_id, request.stamp_s)
            return protocol.reply(request, status, stamp)
        x_t = torch.from_numpy(np.ascontiguousarray(request.tensor))
        status, prediction = self.predict(request.correlation_id, x_t, request.value)
        body = prediction.detach().cpu().numpy() if prediction is not None else None
        return protocol.reply(request, status, (request.stamp_sec, request.stamp_nsec), body)
