"""``gpc-ros benchmark run`` on the real path: sim cameras -> the nodes' perception -> two parents through the
Composer -> FrankaExecutor -> franky -> franky-sim, 2 seeds x 2 weights, killed mid-run and resumed; then two shards.

The parents are tiny untrained policies with the cell's observation keys (what is tested is the path and the
bookkeeping, not their skill); episodes are cut to 0.3 simulated seconds (3 policy steps) to keep the test short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpc_ros.benchmark.results import episode_rows, table
from gpc_ros.compose.parent import ActionNormalization
from gpc_ros.policies.checkpoint import save_policy
from gpc_ros.policies.factory import make_policy
from gpc_ros.policies.presets import policy_config
from gpc_ros.testing.spin import wait_until

REPO = Path(__file__).resolve().parents[2]
KEYS = {"action": [10], "observation.state": [10], "observation.image": [96, 96, 3],
        "observation.pointcloud": [512, 3]}
# the cell's action range (TCP xyz around the cubes, hand pointing down, gripper closed)
LOW = np.array([0.35, -0.2, 0.02, 0.99, -0.05, -0.05, -0.05, -1.0, -0.05, 0.0])
HIGH = np.array([0.65, 0.2, 0.2, 1.0, 0.05, 0.05, 0.05, -0.99, 0.05, 0.001])


def tiny_parents(directory: Path) -> list[str]:
    torch.manual_seed(0)
    norm = ActionNormalization.min_max(LOW, HIGH)
    specs = []
    for name, policy_type in (("rgb", "diffusion"), ("pcd", "dp3")):
        policy = make_policy(policy_type, policy_config(policy_type, "tiny", KEYS), norm, norm)
        save_policy(policy, directory / name)
        specs += ["--parent", f"{name}={directory / name}"]
    return specs


def benchmark(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpc_ros.cli", "benchmark", *args]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 3 runs of a cell (start ~1 min, 4 short episodes each) on a possibly loaded machine
def test_benchmark_on_the_cell_writes_resumes_after_a_kill_and_shards(tmp_path: Path) -> None:
    parents = tiny_parents(tmp_path / "parents")
    common = [*parents, "--arms", "weights:rgb+pcd@0.5,1", "--seeds", "7,8", "--time-limit", "0.3", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    out = tmp_path / "one"
    proc = subprocess.Popen(benchmark("run", *common, "--out", str(out)), env=env, start_new_session=True)
    try:
        def running() -> None:
            assert proc.poll() is None, "the benchmark ended before its first episode was written"

        wait_until(lambda: (out / "benchmark.json").exists() and bool(episode_rows([out])), 600.0,
                   "the first episode row", period_s=0.2, check=running)
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its simulator, mid-run
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = episode_rows([out])
    assert 1 <= len(first) < 4
    subprocess.run(benchmark("run", *common, "--out", str(out)), env=env, check=True, timeout=900)
    rows = episode_rows([out])
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("convex:rgb+pcd@0.5,0.5", 7), ("convex:rgb+pcd@0.5,0.5", 8),
                                                           ("convex:rgb+pcd@1,0", 7), ("convex:rgb+pcd@1,0", 8)]
    assert sum(1 for line in (out / "episodes.shard-0-of-1.jsonl").read_text().splitlines() if line) == 4
    for r in rows:  # each episode ran on the cell: 3 policy steps of simulated time, chunks from the composer
        assert r["steps"] == 3 and r["sim_s"] >= 0.3 and r["chunks"] >= 1 and r["chunk_ms_total"] > 0
        assert r["success"] is False and "short of the goal line" in r["reason"]
    # two shards in two folders merge to the same table as the single run
    for i in range(2):
        subprocess.run(benchmark("run", *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")), env=env,
                       check=True, timeout=900)
    merged = table(episode_rows([tmp_path / "s0", tmp_path / "s1"]))
    assert sorted(r.stats() for r in merged) == sorted(r.stats() for r in table(rows))
    report = subprocess.run(benchmark("report", "--results", str(tmp_path / "s0"), str(tmp_path / "s1"), "--plots",
                                      str(tmp_path / "plots")), env=env, check=True, capture_output=True, text=True,
                            timeout=300)
    assert "`convex:rgb+pcd@0.5,0.5` | 0 % (0/2)" in report.stdout
    assert (tmp_path / "plots" / "success_vs_weight_rgb+pcd.png").stat().st_size > 1000
