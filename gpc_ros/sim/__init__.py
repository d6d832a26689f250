"""The simulated FR3 cell.

franky-sim (MuJoCo, libfranka protocol on a loopback address), the task scene, sim cameras, the scripted expert and
demo collection (docs/sim.md).
"""

import os

# Headless rendering: MuJoCo reads MUJOCO_GL when it first creates a GL context; EGL works without a display here.
os.environ.setdefault("MUJOCO_GL", "egl")
