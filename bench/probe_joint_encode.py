"""Would a joint encode help? Two parents' observation encoders traced and forked in one call (docs/graph.md, s12).

The ``bench_graph.py`` parents (``small`` RGB diffusion and DP3 checkpoints), 1 intra-op thread, 2 inter-op
threads; cases interleaved rep by rep, median of ``--reps`` (times per chunk's encode, ms):

* ``rgb`` / ``pcd``: one parent's ``encode`` (observation -> tensors -> normalised state -> encoder), eager;
* ``both, one after the other``: both ``encode`` s; ``both, threads``: the DP3 ``encode`` on a pool thread;
* ``rgb, traced encoder`` / ``both, forked traced encoders``: the Python part of ``encode`` as it is, the encoder
  modules (``observation_encoder``) as frozen traces, the DP3 one forked (``torch.jit.fork``) in one call.
* ``both, built JointEncoders``: what ``ComposerConfig.joint_encode`` runs (session 12): the parents' Python part of
  ``encode`` as it is, then :class:`~gpc_ros.policies.traced.ForkedEncoders` traced, the DP3 encoder forked.

Prints whether the traced encodings are bit-identical (``torch.equal``) to the eager ones, and the load average.
Run: ``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_joint_encode.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

torch.set_num_threads(1)

from bench_graph import fill, write_checkpoints  # noqa: E402  (bench/, next to this script)

from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402
from gpc_ros.policies.adapter import JointEncoders  # noqa: E402
from gpc_ros.policies.encoders.observation import STATE_KEY, observation_tensors  # noqa: E402


class _Fork2(torch.nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, ta: dict[str, torch.Tensor], tb: dict[str, torch.Tensor]):
        fut = torch.jit.fork(self.b, tb)
        return self.a(ta), torch.jit.wait(fut)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    load0 = os.getloadavg()
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-encode-")))
    policies, obs, parents = {}, {}, {}
    t_obs = time.time()
    for n in ("rgb", "pcd"):
        parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=True))
        core = HostCore(parent, observing)
        fill(core, t_obs)
        obs[n] = core.window.at(t_obs)[0]
        policies[n] = parent._encoder.inputs.__self__  # the ChunkPolicy behind the parent (its SplitEncoder)
        parents[n] = parent

    def tensors(n):  # ChunkPolicy.encode's Python part, unchanged
        p = policies[n]
        ts = observation_tensors(obs[n], p.config.observation)
        ts[STATE_KEY] = p.state_normalization.normalize(ts[STATE_KEY])
        return ts

    with torch.no_grad():
        ex = {n: tensors(n) for n in policies}
        traced = {n: torch.jit.freeze(torch.jit.trace(policies[n].observation_encoder, (ex[n],), strict=False).eval(),
                                      optimize_numerics=False) for n in policies}
        raw = [torch.jit.trace(policies[n].observation_encoder, (ex[n],), strict=False) for n in ("rgb", "pcd")]
        both = torch.jit.freeze(torch.jit.script(_Fork2(*raw)).eval(), optimize_numerics=False)
        eager = {n: policies[n].encode(obs[n]) for n in policies}
        forked = both(tensors("rgb"), tensors("pcd"))
        print("traced encoders bit-identical:", {n: torch.equal(traced[n](tensors(n)), eager[n]) for n in policies},
              "forked:", [torch.equal(a, eager[n]) for a, n in zip(forked, ("rgb", "pcd"))])
    built = JointEncoders([parents["rgb"], parents["pcd"]])  # what ComposerConfig.joint_encode uses (session 12)
    built.parents[0]._denoiser.background = False
    with torch.no_grad():
        print("built JointEncoders bit-identical:",
              [torch.equal(a, eager[n]) for a, n in zip(built([obs["rgb"], obs["pcd"]]), ("rgb", "pcd"))])
    pool = ThreadPoolExecutor(1)

    def threads():
        with torch.no_grad():
            f = pool.submit(lambda: torch.no_grad()(policies["pcd"].encode)(obs["pcd"]))
            policies["rgb"].encode(obs["rgb"])
            f.result()

    cases = {"rgb": lambda: policies["rgb"].encode(obs["rgb"]), "pcd": lambda: policies["pcd"].encode(obs["pcd"]),
             "both, one after the other": lambda: (policies["rgb"].encode(obs["rgb"]),
                                                   policies["pcd"].encode(obs["pcd"])),
             "both, threads": threads,
             "rgb, traced encoder": lambda: traced["rgb"](tensors("rgb")),
             "both, forked traced encoders": lambda: both(tensors("rgb"), tensors("pcd")),
             "both, built JointEncoders": lambda: built([obs["rgb"], obs["pcd"]])}
    times = {k: [] for k in cases}
    with torch.no_grad():
        for f in cases.values():
            for _ in range(5):
                f()
        for r in range(args.reps):
            for k, f in (list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    load1 = os.getloadavg()
    print(f"load before {load0[0]:.2f}, after {load1[0]:.2f}; median of {args.reps} interleaved reps")
    for k, v in times.items():
        print(f"{k:30s} {statistics.median(v) * 1e3:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
