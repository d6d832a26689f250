"""Print the pinned requirements of the running venv, split for requirements/*.lock (used by ./run lock).

Only distributions that pip itself installed are listed: the ROS 2 wheels also unpack egg-info folders of their
bundled ROS packages (action_msgs, ...), which are not on the package index and must not be pinned.
"""

import sys
from importlib.metadata import distributions

which = sys.argv[1]  # "ros" or "python"
pins = set()
for dist in distributions():
    path = getattr(dist, "_path", None)
    if path is None or not str(path).endswith(".dist-info"):
        continue
    if (dist.read_text("INSTALLER") or "").strip() != "pip":
        continue
    name = dist.metadata["Name"]
    unpinned = {"torch", "pip", "setuptools", "wheel", "gpc-ros", "gpc_ros"}
    if dist.read_text("direct_url.json") or name.lower() in unpinned:
        continue
    is_ros = name.lower().startswith("ros-")
    if is_ros == (which == "ros"):
        pins.add(f"{name}=={dist.version}")
print("\n".join(sorted(pins, key=str.lower)))
