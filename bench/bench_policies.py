"""Parent policies at the shipped size ("small"): parameters, memory, encode / predict time, training throughput.

For each family (diffusion = RGB Diffusion Policy, dp3 = point cloud, flow with the image encoder), in one run:

* parameters;
* RSS of a fresh process holding one loaded parent (after one encode + predict), and the same process before it
  loaded the checkpoint (torch + gpc_ros imported), so the difference is what the parent itself costs;
* per-observation encode time (one observation window of T_obs = 2 frames);
* per-step predict time for batch 1 and batch 11 (the paper's 11 candidate weights), and their ratio;
* training throughput (samples/s) at batch 64, forward + backward + AdamW + EMA.

Median of ``--repeats`` timings after warm-up, ``--threads`` torch threads (default 1). Run:
``.venv/bin/python bench/bench_policies.py``. Prints a markdown table (docs/policies.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpc_ros.compose.parent import repeat_encoding
from gpc_ros.policies import make_policy, save_policy
from gpc_ros.policies.ema import EMA
from gpc_ros.policies.encoders.observation import random_observation
from gpc_ros.policies.normalization import fit_min_max
from gpc_ros.policies.presets import policy_config

MODELS = [("diffusion", {}), ("dp3", {}), ("flow", {"modality": "image"})]

RSS_PROBE = r"""
import json, sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
import numpy as np, torch
torch.set_num_threads(1)
from gpc_ros.policies import load_parent
before = rss_mb()
parent = load_parent(sys.argv[1])
obs = json.loads(sys.argv[2])
obs = {k: np.zeros(v, dtype=np.uint8 if k.endswith("image") else np.float32) for k, v in obs.items()}
enc = parent.encode(obs)
parent.predict(torch.zeros(1, parent.action_horizon, parent.action_dim), 10.0, enc)
print(json.dumps({"before_mb": before, "after_mb": rss_mb()}))
"""


def observation(config, batch: int) -> dict[str, np.ndarray]:
    return random_observation(config.observation, batch)


def median_s(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(policy_type: str, kwargs: dict, repeats: int, train_steps: int, workdir: Path) -> dict[str, float]:
    config = policy_config(policy_type, "small", modality=kwargs.get("modality"))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    policy = make_policy(policy_type, config, fit_min_max(rng.uniform(0.2, 0.7, (64, config.action_dim))),
                         fit_min_max(rng.uniform(0.2, 0.7, (64, config.observation.state_dim))))
    params = sum(p.numel() for p in policy.parameters())
    ckpt = save_policy(policy, workdir / policy_type)
    parent = policy.as_parent(policy_type)
    obs1 = observation(config, 1)
    encode_s = median_s(lambda: parent.encode(obs1), repeats)
    enc = parent.encode(obs1)
    h, d = config.action_horizon, config.action_dim
    x1, x11 = torch.randn(1, h, d), torch.randn(11, h, d)
    enc11 = repeat_encoding(enc, 11)
    predict1_s = median_s(lambda: parent.predict(x1, 10.0, enc), repeats * 5)
    predict11_s = median_s(lambda: parent.predict(x11, 10.0, enc11), repeats * 5)

    # training throughput: forward + backward + AdamW + EMA at batch 64
    policy.train()
    ema = EMA(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, foreach=True)
    batch = {**observation(config, 64), "action": rng.uniform(0.2, 0.7, (64, h, d)).astype(np.float32)}

    def step() -> None:
        loss = policy.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(policy)

    train_s = median_s(step, train_steps, warmup=1)

    shapes = {k: list(v.shape) for k, v in obs1.items()}
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(ckpt), json.dumps(shapes)], capture_output=True,
                           text=True, check=True)
    rss = json.loads(probe.stdout.strip().splitlines()[-1])
    return {"params_m": params / 1e6, "rss_mb": rss["after_mb"], "rss_parent_mb": rss["after_mb"] - rss["before_mb"],
            "encode_ms": encode_s * 1e3, "predict1_ms": predict1_s * 1e3, "predict11_ms": predict11_s * 1e3,
            "ratio11": predict11_s / predict1_s, "train_sps": 64 / train_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy_type, kwargs in MODELS:
            rows.append((policy_type, bench_one(policy_type, kwargs, args.repeats, args.train_steps, Path(tmp))))
    print(f"torch {torch.__version__}, {args.threads} thread(s); shipped size 'small'; medians")
    print("| model | params (M) | RSS with parent (MB) | of which parent (MB) | encode / obs (ms) | "
          "predict B=1 (ms) | predict B=11 (ms) | B=11 / B=1 | train (samples/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['params_m']:.2f} | {r['rss_mb']:.0f} | {r['rss_parent_mb']:.0f} | {r['encode_ms']:.2f} | "
              f"{r['predict1_ms']:.2f} | {r['predict11_ms']:.2f} | {r['ratio11']:.2f} | {r['train_sps']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
