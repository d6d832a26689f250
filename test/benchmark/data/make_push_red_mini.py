"""Cut the test fixture ``push_red_mini`` from a real ``gpc-ros collect --task push_red`` dataset.

    python test/benchmark/data/make_push_red_mini.py /work/data/push_red test/benchmark/data/push_red_mini

Episodes 0 and 1, their first 24 steps; images area-averaged from 96x96 to 32x32 (``policy_image``'s resize), point
clouds cut to their first 64 points (the pipeline's farthest-point order, so they are a farthest-point subset of the
512); state and action as recorded. ``info.source_episodes_sha256`` is the sha256 over the two source episode files
(names and bytes, as ``gpc-ros collect --hash`` hashes a whole dataset).
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from gpc_ros.policies.dataset import write_episodes
from gpc_ros.sim.observation import policy_image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
episodes = []
for i in range(2):
    with np.load(src / f"episode_{i:06d}.npz") as d:
        ep = {k: d[k][:24] for k in d.files}
    for key in ("observation.image", "observation.image_wrist"):
        ep[key] = np.stack([policy_image(f, 32) for f in ep[key]])
    ep["observation.pointcloud"] = ep["observation.pointcloud"][:, :64]
    episodes.append(ep)
h = hashlib.sha256()
for i in range(2):
    p = src / f"episode_{i:06d}.npz"
    h.update(p.name.encode())
    h.update(p.read_bytes())
meta = json.loads((src / "dataset.json").read_text())
write_episodes(dst, episodes, meta["fps"], info={"source": "gpc-ros collect --task push_red --seed 0, cut by "
                                                 "test/benchmark/data/make_push_red_mini.py",
                                                 "source_episodes_sha256": h.hexdigest()})
print(dst, sorted(p.stat().st_size for p in dst.iterdir()))
