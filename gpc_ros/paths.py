"""Where gpc_ros's installed data files (config/, launch/, urdf/) are.

A colcon install puts them in ``<prefix>/share/gpc_ros`` (found through the ament index); a pip install puts them
in ``<venv>/share/gpc_ros``; an editable install or a plain checkout uses the source tree.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "gpc_ros"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """The folder holding ``config/``, ``launch/`` and ``urdf/`` of this gpc_ros."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

            try:
                return Path(get_package_share_directory(PACKAGE))
            except PackageNotFoundError:
                pass
        except ImportError:
            pass
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "config").is_dir():
        return _SOURCE_ROOT
    prefix_share = Path(sys.prefix) / "share" / PACKAGE
    if prefix_share.is_dir():
        return prefix_share
    raise FileNotFoundError(
        f"cannot find gpc_ros's share folder (tried the ament index, {_SOURCE_ROOT} and {prefix_share}); "
        "install the package with colcon or pip, or run from a checkout"
    )


def config_file(name: str) -> Path:
    """Path of ``config/<name>``; raises FileNotFoundError naming the folder searched."""
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"config file {name!r} not found in {path.parent}")
    return path
