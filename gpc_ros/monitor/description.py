"""The FR3 robot description (``urdf/fr3.urdf``) and where its meshes come from.

``urdf/fr3.urdf`` names its meshes the way franka_description installs them
(``package://franka_description/meshes/robots/fr3/visual/link0.dae``, ...). :func:`robot_description` returns
the URDF text for ``robot_state_publisher`` / rviz / Foxglove with the mesh URIs chosen by ``mesh_source``:

- ``franka_description``: unchanged (rviz resolves ``package://`` through the ament index);
- ``franky_sim``: ``file://`` URIs of the identical meshes franky-sim ships (``franky_sim/assets/meshes``,
  Apache-2.0, see urdf/NOTICE) — works wherever the package's requirements are installed;
- ``none``: no meshes at all (kinematics only; rviz draws nothing for the links);
- ``auto`` (default): ``franka_description`` when that package is in the ament index, else ``franky_sim``
  when importable, else ``none``.

:func:`mesh_path` maps either kind of URI to a local file (the Foxglove view's asset handler serves it).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

MESH_SOURCES = ("auto", "franka_description", "franky_sim", "none")
URDF_NAME = "fr3.urdf"
_PACKAGE_URI = re.compile(r"package://franka_description/meshes/(?P<rel>[^\"<>\s]+)")
_MESH_ATTRIBUTE = re.compile(r'filename="(?P<uri>package://franka_description/meshes/(?P<rel>[^"]+))"')
# franka_description layout -> franky-sim's flat file names
_FRANKY_NAMES = {
    re.compile(r"robots/fr3/visual/(link\d)\.dae"): r"\1_vis.dae",
    re.compile(r"robots/fr3/collision/(link\d)\.stl"): r"\1_coll.stl",
    re.compile(r"robot_ee/franka_hand_white/visual/hand\.dae"): "hand_vis.dae",
    re.compile(r"robot_ee/franka_hand_white/collision/hand\.stl"): "hand_coll.stl",
    re.compile(r"robot_ee/franka_hand_white/visual/finger\.dae"): "finger_vis.dae",
}


def urdf_path() -> Path:
    """``urdf/fr3.urdf`` of this gpc_ros (source checkout, colcon or pip install)."""
    from gpc_ros.paths import share_dir

    return share_dir() / "urdf" / URDF_NAME


def franka_description_share() -> Path | None:
    """franka_description's share folder when the ament index has it (a ROS install with the package)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory("franka_description"))
    except (PackageNotFoundError, ValueError, LookupError, KeyError, OSError):  # OSError: no AMENT_PREFIX_PATH
        return None


@lru_cache(maxsize=1)
def franky_sim_meshes() -> Path | None:
    """franky-sim's ``assets/meshes`` folder (None when franky-sim is not installed)."""
    try:
        from franky_sim.urdf import URDF_PATH
    except ImportError:
        return None
    folder = Path(URDF_PATH).parent / "meshes"
    return folder if folder.is_dir() else None


def franky_sim_file(rel: str) -> Path | None:
    """franky-sim's copy of franka_description's ``meshes/<rel>``."""
    folder = franky_sim_meshes()
    if folder is None:
        return None
    for pattern, name in _FRANKY_NAMES.items():
        if pattern.fullmatch(rel):
            path = folder / pattern.sub(name, rel)
            return path if path.is_file() else None
    return None


def resolve_mesh_source(mesh_source: str = "auto") -> str:
    """The concrete source ``auto`` stands for here."""
    if mesh_source not in MESH_SOURCES:
        raise ValueError(f"mesh_source must be one of {MESH_SOURCES}, got {mesh_source!r}")
    if mesh_source != "auto":
        return mesh_source
    if franka_description_share() is not None:
        return "franka_description"
    return "franky_sim" if franky_sim_meshes() is not None else "none"


def robot_description(mesh_source: str = "auto", path: Path | None = None) -> str:
    """The URDF text with mesh URIs for ``mesh_source`` (see the module docstring)."""
    text = (path or urdf_path()).read_text()
    source = resolve_mesh_source(mesh_source)
    if source == "franka_description":
        return text
    if source == "none":
        return _without_meshes(text)

    def to_file(match: re.Match) -> str:
        found = franky_sim_file(match.group("rel"))
        if found is None:
            raise FileNotFoundError(f"franky-sim has no copy of franka_description mesh {match.group('rel')!r}; "
                                    f"use mesh_source 'none' or install franka_description")
        return f'filename="{found.resolve().as_uri()}"'

    if franky_sim_meshes() is None:
        raise FileNotFoundError("mesh_source 'franky_sim' needs franky-sim installed (pip install franky-sim)")
    return _MESH_ATTRIBUTE.sub(to_file, text)


def _without_meshes(text: str) -> str:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    for link in root.iter("link"):
        for child in list(link):
            if child.tag in ("visual", "collision") and child.find("geometry/mesh") is not None:
                link.remove(child)
    return '<?xml version="1.0" ?>\n' + ET.tostring(root, encoding="unicode")


def mesh_path(uri: str) -> Path | None:
    """Local file of a mesh URI of the description (``package://franka_description/...`` or ``file://``)."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(uri).path))
        return path if path.is_file() else None
    match = _PACKAGE_URI.fullmatch(uri)
    if match is None:
        return None
    share = franka_description_share()
    if share is not None and (share / "meshes" / match.group("rel")).is_file():
        return share / "meshes" / match.group("rel")
    return franky_sim_file(match.group("rel"))


#: Links of urdf/fr3.urdf that carry meshes (what a 3D view must place), plus the TCP frame.
VISUAL_LINKS: tuple[str, ...] = tuple(f"fr3_link{i}" for i in range(8)) + (
    "fr3_hand", "fr3_leftfinger", "fr3_rightfinger", "fr3_hand_tcp")


class LinkPoser:
    """Poses in ``fr3_link0`` of every link of ``urdf/fr3.urdf`` that a 3D view draws.

    From joint positions and the gripper opening: what ``robot_state_publisher`` computes from ``joint_states``,
    for views without ROS.

    The arm's forward kinematics is :class:`gpc_ros.control.kinematics.FR3Kinematics` built from the same URDF;
    each finger slides along its frame's y axis by half the opening width (the URDF's prismatic finger joints).
    """

    def __init__(self, urdf: Path | None = None) -> None:
        from gpc_ros.control.kinematics import FR3Kinematics

        self.kinematics = FR3Kinematics(urdf or urdf_path())
        model = self.kinematics.model
        missing = [name for name in VISUAL_LINKS if not model.existFrame(name)]
        if missing:
            raise ValueError(f"URDF {self.kinematics.urdf_path} lacks the links {missing}")
        self._ids = {name: int(model.getFrameId(name)) for name in VISUAL_LINKS}

    def poses(self, joint_positions_rad, gripper_width_m: float = 0.0) -> dict[str, tuple]:
        """Link -> (position (3,) m, quaternion (4,) x, y, z, w) in fr3_link0."""
        import numpy as np
        import pinocchio as pin

        kin = self.kinematics
        kin.forward(np.asarray(joint_positions_rad, dtype=np.float64))  # updates kin.data's frame placements
        half = float(np.clip(gripper_width_m, 0.0, 0.08)) / 2.0
        out = {}
        for name, fid in self._ids.items():
            placement = kin.data.oMf[fid]
            if name in ("fr3_leftfinger", "fr3_rightfinger"):
                placement = placement * pin.SE3(np.eye(3), np.array([0.0, half, 0.0]))
            out[name] = (np.array(placement.translation), np.array(pin.Quaternion(placement.rotation).coeffs()))
        return out
