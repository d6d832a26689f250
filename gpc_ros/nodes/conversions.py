"""The one place where numpy arrays and core values become ROS messages and back.

Nodes call these; the core never sees a message. Sections are grouped by the messages they convert.
Conventions (frames, units, layouts) are documented in docs/messages.md.
"""

from __future__ import annotations

import numpy as np  # noqa: F401  (used by every section)

# --- time ------------------------------------------------------------------------------------------------------

# --- images and camera info (perception) --------------------------------------------------------------------------

# --- point clouds (perception) ------------------------------------------------------------------------------------

# --- robot state, poses and action chunks (driver) ----------------------------------------------------------------
