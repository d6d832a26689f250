"""Simulated RGB-D cameras: MuJoCo renders the cell from a copy of the simulator state, headless (EGL).

A :class:`CellRenderer` keeps its own copy of the cell's model (built by :func:`gpc_ros.sim.scene.cell_model_xml`,
so qpos layouts agree with the server), sets a ``qpos`` snapshot, runs forward kinematics only and renders colour and
depth with shadows, reflections and anti-aliasing off (shadows alone multiply the cost ~8x on this CPU renderer).

:class:`SimFrameSource` is the :class:`~gpc_ros.perception.frames.FrameSource` of one cell camera: it reads the
state a served cell shares (:mod:`gpc_ros.sim.shared_state`), renders a frame every ``1 / fps`` *simulated* seconds
and stamps it with the simulated time, so ``camera_node`` publishes it exactly like a RealSense frame.

Conventions: depth is the z distance along the optical axis (m, float32), aligned to colour by construction (one
camera renders both); intrinsics are the true pinhole of the render, ``fy = fx = (H / 2) / tan(fovy / 2)``,
principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integer coordinates); the
optical frame ``<camera>_color_optical_frame`` is REP-103 (x right, y down, z forward). The front camera's pose
in fr3_link0 is :func:`camera_to_base` (fixed); the wrist camera's is fixed relative to ``fr3_hand``
(:func:`camera_to_parent`) and moves with the arm.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

import gpc_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from gpc_ros.perception.frames import CameraIntrinsics, FrameSource, FrameSourceError, RgbdFrame
from gpc_ros.sim.scene import CAMERAS, CameraMount, cell_model_xml
from gpc_ros.sim.tasks import PushTaskConfig, get_task

logger = logging.getLogger(__name__)

#: Depth beyond this is no data (0), like a RealSense's range limit (m).
MAX_DEPTH_M = 4.0


def camera_mount(name: str) -> CameraMount:
    """The mount of cell camera ``name``; ``ValueError`` naming the cameras otherwise."""
    if name not in CAMERAS:
        raise ValueError(f"unknown cell camera {name!r}; the cell has {', '.join(CAMERAS)}")
    return CAMERAS[name]


def camera_intrinsics(name: str, width: int, height: int) -> CameraIntrinsics:
    """True pinhole model of camera ``name`` rendered at ``width`` x ``height`` (px)."""
    f = 0.5 * height / np.tan(np.deg2rad(camera_mount(name).fovy_deg) / 2.0)
    return CameraIntrinsics(int(width), int(height), float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0)


def camera_to_parent(name: str) -> np.ndarray:
    """(4, 4) pose of ``<name>_color_optical_frame`` in its mount body's frame (fr3_link0 for ``front``)."""
    mount = camera_mount(name)
    out = np.eye(4)
    out[:3, :3] = mount.optical_rotation()
    out[:3, 3] = mount.position_m
    return out


def camera_to_base(name: str = "front") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pose of a world-mounted camera's optical frame in fr3_link0 as (xyz m, quaternion x, y, z, w).

    These are the ``<name>.camera_to_base_*`` parameters of pointcloud_node.
    """
    from gpc_ros.action_space import _matrix_to_quat

    if camera_mount(name).body != "world":
        raise ValueError(f"camera {name!r} moves with the arm; it has no fixed pose in fr3_link0")
    t = camera_to_parent(name)
    return tuple(float(v) for v in t[:3, 3]), tuple(float(v) for v in _matrix_to_quat(t[:3, :3]))


#: Colour of the arm links when drawn with their collision meshes.
ARM_RGBA = (0.92, 0.92, 0.90, 1.0)


def _light_arm_meshes(model) -> None:
    """Draw the arm links 0..7 with their collision meshes (3.2 k triangles) instead of the visual ones (240 k).

    llvmpipe transforms every triangle per frame: 2.6 ms instead of 115 ms for a 96x96 frame here. The hand and
    fingers keep their visual meshes (what the wrist camera sees up close).
    """
    import mujoco

    for g in range(model.ngeom):
        body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[g])) or ""
        if not body.startswith("robot0_fr3_link"):
            continue
        if model.geom_group[g] == 2:
            model.geom_group[g] = 5  # hidden (renderers show groups 0-2)
        elif model.geom_group[g] == 3:
            model.geom_group[g] = 2
            model.geom_rgba[g] = ARM_RGBA
            model.geom_matid[g] = -1


@dataclass(frozen=True)
class RenderedFrame:
    """One camera's render."""

    rgb: np.ndarray
    """(H, W, 3) uint8."""
    depth_m: np.ndarray
    """(H, W) float32, 0 = no data."""


class RendererError(FrameSourceError):
    """The MuJoCo renderer cannot start (no EGL / GL context) or cannot render."""


def _no_renderer(exc: BaseException) -> str:
    backend = os.environ.get("MUJOCO_GL", "")
    return (f"the MuJoCo renderer cannot start with MUJOCO_GL={backend!r} ({type(exc).__name__}: {exc}); headless "
            f"rendering needs MUJOCO_GL=egl set before mujoco is imported and apt libegl1 + libgl1-mesa-dri")


class CellRenderer:
    """Renders the cell's cameras from qpos snapshots (its own model and data: never the simulator's)."""

    def __init__(self, task: PushTaskConfig, resolutions: dict[str, tuple[int, int]]) -> None:
        """``resolutions``: camera name -> (width, height) px."""
        try:
            import mujoco  # picks its GL backend (MUJOCO_GL) on first import: fails here when it cannot load
        except Exception as exc:  # AttributeError / ImportError from PyOpenGL without the backend's library
            raise RendererError(_no_renderer(exc)) from exc

        self._mujoco = mujoco
        for name, (w, h) in resolutions.items():
            camera_mount(name)
            if not (isinstance(w, int) and isinstance(h, int) and 8 <= w <= 1920 and 8 <= h <= 1440):
                raise ValueError(f"camera {name!r} resolution must be integers 8..1920 x 8..1440 px, got {(w, h)!r}")
        self.model = mujoco.MjModel.from_xml_string(cell_model_xml(task))
        m = self.model
        m.vis.quality.offsamples = 0
        m.vis.quality.shadowsize = 0
        m.vis.global_.offwidth = max([640] + [w for w, _ in resolutions.values()])
        m.vis.global_.offheight = max([480] + [h for _, h in resolutions.values()])
        m.vis.map.znear = 0.02 / m.stat.extent
        m.vis.map.zfar = MAX_DEPTH_M * 1.5 / m.stat.extent
        _light_arm_meshes(m)
        self.data = mujoco.MjData(m)
        self.resolutions = dict(resolutions)
        self._renderers: dict[tuple[int, int], object] = {}
        try:
            for w, h in set(resolutions.values()):
                r = mujoco.Renderer(m, height=h, width=w)
                flags = r.scene.flags
                flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
                flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
                flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
                self._renderers[(w, h)] = r
        except Exception as exc:  # mujoco raises plain Exceptions / FatalError when EGL is missing
            self.close()
            raise RendererError(_no_renderer(exc)) from exc
        self._camera_ids = {name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, name) for name in resolutions}

    def set_state(self, qpos: np.ndarray) -> None:
        """Pose the copy: positions only, forward kinematics and camera/light placement (no dynamics)."""
        if qpos.shape != (self.model.nq,):
            raise ValueError(f"qpos must have shape ({self.model.nq},) for this cell, got {qpos.shape}")
        self.data.qpos[:] = qpos
        self._mujoco.mj_kinematics(self.model, self.data)
        self._mujoco.mj_camlight(self.model, self.data)

    def render(self, camera: str, depth: bool = True) -> RenderedFrame:
        """Colour (and depth) of ``camera`` at the state last set."""
        w, h = self.resolutions[camera]
        r = self._renderers[(w, h)]
        r.update_scene(self.data, camera=self._camera_ids[camera])
        r.scene.flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        rgb = r.render().copy()
        d = np.zeros((h, w), np.float32)
        if depth:
            r.enable_depth_rendering()
            d = r.render().astype(np.float32)
            r.disable_depth_rendering()
            d[d > MAX_DEPTH_M] = 0.0
        return RenderedFrame(rgb, d)

    def camera_pose(self, camera: str) -> np.ndarray:
        """(4, 4) pose of the camera's optical frame in fr3_link0 at the state last set."""
        cid = self._camera_ids[camera]
        out = np.eye(4)
        out[:3, :3] = self.data.cam_xmat[cid].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        out[:3, 3] = self.data.cam_xpos[cid]
        return out

    def close(self) -> None:
        """Release the GL contexts (idempotent)."""
        for r in self._renderers.values():
            try:
                r.close()
            except Exception:  # best effort at teardown (the GL context may already be gone)
                pass
        self._renderers = {}


@dataclass(frozen=True)
class SimCameraConfig:
    """One camera of a served cell, as a frame source.

    Attributes:
        host: loopback address of the served cell (``gpc-ros sim-server --task ... --host``).
        camera: ``front`` or ``wrist``.
        width, height: render size (px).
        fps: frames per *simulated* second.
    """

    host: str = "127.0.0.2"
    camera: str = "front"
    width: int = 320
    height: int = 240
    fps: float = 10.0

    def __post_init__(self) -> None:
        camera_mount(self.camera)
        if not (isinstance(self.width, int) and isinstance(self.height, int) and self.width >= 8
                and self.height >= 8):
            raise ValueError(f"SimCameraConfig width/height must be integers >= 8 px, got "
                             f"{(self.width, self.height)!r}")
        if not (np.isfinite(self.fps) and 0 < self.fps <= 90):
            raise ValueError(f"SimCameraConfig.fps must be in (0, 90] Hz, got {self.fps!r}")


class SimFrameSource(FrameSource):
    """Frames of one camera of the cell served on ``config.host``, stamped with the simulated time (s)."""

    def __init__(self, config: SimCameraConfig) -> None:
        self.config = config
        self._reader = None
        self._renderer: CellRenderer | None = None
        self._next_s: float | None = None
        self._frame_number = 0
        self.intrinsics = camera_intrinsics(config.camera, config.width, config.height)

    def start(self) -> None:
        """Attach to the served cell's shared state and start the renderer (``FrameSourceError`` if neither)."""
        from gpc_ros.sim.shared_state import SharedStateReader, cell_paths, read_meta

        state_path, meta_path, _ = cell_paths(self.config.host)
        try:
            meta = read_meta(meta_path)
            reader = SharedStateReader(state_path)
        except (OSError, ValueError) as exc:
            raise FrameSourceError(f"no simulated cell serves on {self.config.host} ({exc}); start one with "
                                   f"`gpc-ros sim-server --task push_red --host {self.config.host}`") from exc
        try:
            task = get_task(meta["task"])
            self._renderer = CellRenderer(task, {self.config.camera: (self.config.width, self.config.height)})
        except BaseException:
            reader.close()
            raise
        if self._renderer.model.nq != reader.nq:
            reader.close()
            raise FrameSourceError(f"the cell on {self.config.host} shares {reader.nq} qpos values but task "
                                   f"{meta['task']!r} has {self._renderer.model.nq}")
        self._reader = reader

    def read(self, timeout_s: float) -> RgbdFrame | None:
        """The next frame once ``1 / fps`` simulated seconds passed, or None after ``timeout_s`` wall seconds."""
        if self._reader is None or self._renderer is None:
            raise FrameSourceError("SimFrameSource.read() before start()")
        deadline = time.monotonic() + timeout_s
        period = 1.0 / self.config.fps
        while True:
            snap = self._reader.snapshot()
            if self._next_s is None or snap.time_s + 1e-9 >= self._next_s or snap.time_s < self._next_s - 2 * period:
                break  # due (or the cell restarted / was reset and its clock went back)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
        self._next_s = snap.time_s + period
        self._renderer.set_state(snap.qpos)
        frame = self._renderer.render(self.config.camera)
        self._frame_number += 1
        return RgbdFrame(frame.depth_m, frame.rgb, self.intrinsics, snap.time_s, self._frame_number,
                         f"sim-{self.config.host}-{self.config.camera}")

    def stop(self) -> None:
        """Release renderer and shared state (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
