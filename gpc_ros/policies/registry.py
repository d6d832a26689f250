"""Shipped parents, found by name: ``resolve_checkpoint("push_red_diffusion_rgb")`` -> its checkpoint folder.

A shipped parent is a folder ``parents/<name>/`` in the source tree, installed by setup.py to
``share/gpc_ros/parents/<name>/``, holding a normal checkpoint (``model.safetensors`` + ``config.json``, read by
:func:`gpc_ros.policies.checkpoint.load_policy`) and ``provenance.json``: the exact command, seed and dataset hash
that regenerate it, and a fixed-seed reference chunk (``reference_chunk.npz``) that a test reproduces.

Folders are searched in this order (the first holding ``<name>`` wins):

1. every folder in the environment variable ``GPC_ROS_PARENTS`` (``os.pathsep``-separated), for a lab's own;
2. ``share/gpc_ros/parents`` of the installed package (colcon or a non-editable pip install);
3. ``parents/`` of the source tree this module was imported from (a clone, an editable install).

Configs name a parent either by a path (a checkpoint folder) or by a shipped name; :func:`resolve_checkpoint`
accepts both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from gpc_ros.policies.checkpoint import CONFIG_FILE, load_policy

logger = logging.getLogger(__name__)

ENV_VAR = "GPC_ROS_PARENTS"
PROVENANCE_FILE = "provenance.json"
REFERENCE_FILE = "reference_chunk.npz"
_PACKAGE = "gpc_ros"


def _share_dirs() -> list[Path]:
    out = []
    try:  # a ROS install (colcon): the ament index knows the share folder
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory(_PACKAGE)) / "parents")
    except Exception:  # noqa: BLE001 - no ament index / package not registered: fall through
        pass
    out.append(Path(sys.prefix) / "share" / _PACKAGE / "parents")  # pip install (data_files under the prefix)
    return out


def search_path() -> list[Path]:
    """Folders searched for shipped parents, in order (see the module docstring)."""
    env = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    source = Path(__file__).resolve().parents[2] / "parents"
    seen: list[Path] = []
    for p in [*env, *_share_dirs(), source]:
        if p not in seen:
            seen.append(p)
    return seen


def list_parents() -> dict[str, Path]:
    """Every shipped parent name -> its folder (first match along :func:`search_path`)."""
    found: dict[str, Path] = {}
    for root in search_path():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / CONFIG_FILE).is_file() and folder.name not in found:
                found[folder.name] = folder
    return found


def find_parent(name: str) -> Path:
    """The checkpoint folder of the shipped parent ``name``; ``ValueError`` naming the known parents otherwise."""
    for root in search_path():
        folder = root / name
        if (folder / CONFIG_FILE).is_file():
            return folder
    known = ", ".join(sorted(list_parents())) or "none"
    raise ValueError(f"no shipped parent named {name!r} (known: {known}; searched "
                     f"{', '.join(str(p) for p in search_path())}); pass a checkpoint folder or one of the names")


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A checkpoint folder from a config value: an existing folder holding ``config.json``, or a shipped name."""
    path = Path(spec)
    if (path / CONFIG_FILE).is_file():
        return path
    if os.sep in str(spec) or path.exists():
        raise ValueError(f"{spec} is not a policy checkpoint folder (no {CONFIG_FILE})")
    return find_parent(str(spec))


def provenance(spec: str | os.PathLike) -> dict:
    """The ``provenance.json`` of a shipped parent (command, seed, dataset hash, training steps); {} if none."""
    path = resolve_checkpoint(spec) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_named_policy(spec: str | os.PathLike, device: str = "cpu"):
    """:func:`~gpc_ros.policies.checkpoint.load_policy` of a shipped name or a checkpoint folder."""
    return load_policy(resolve_checkpoint(spec), device)


def load_named_parent(spec: str | os.PathLike, name: str | None = None, device: str = "cpu"):
    """:func:`~gpc_ros.policies.checkpoint.load_parent` of a shipped name or a checkpoint folder.

    ``name`` defaults to the shipped name for a shipped parent, to the policy type for a folder.
    """
    folder = resolve_checkpoint(spec)
    default = folder.name if folder.parent.name == "parents" else None
    return load_policy(folder, device).as_parent(name or default)
