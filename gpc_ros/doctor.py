"""``gpc-ros doctor``: import every part of the stack and print its version (exit 1 if any fails)."""

from __future__ import annotations

import argparse
import importlib

MODULES = ["numpy", "torch", "diffusers", "rclpy", "open3d", "pyrealsense2", "cv2", "franky", "franky_sim",
           "rosbags", "mujoco", "safetensors", "yaml"]


def main(argv: list[str] | None = None) -> int:
    """Import every module of ``MODULES`` and print its version or why it failed to import.

    Returns:
        0 if all imports succeeded, 1 otherwise.
    """
    argparse.ArgumentParser(prog="gpc-ros doctor", description=__doc__).parse_args(argv)
    failed = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None) or getattr(module, "VERSION", None) or "(no version)"
            print(f"ok    {name:14s} {version}")
        except Exception as exc:  # report every failure, not just the first
            failed += 1
            print(f"FAIL  {name:14s} {type(exc).__name__}: {exc}")
    print("all imports ok" if not failed else f"{failed} module(s) failed to import")
    return 1 if failed else 0
