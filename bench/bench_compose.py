#!/usr/bin/env python3
"""Per-chunk cost of the GPC core on CPU (prints a table; figures go to docs/compose.md).

Two small torch parents (an MLP denoiser conditioned on an encoded observation and a sinusoidal time embedding;
width 512: 0.79 M parameters, width 1536: 5.5 M, both printed; H = 16, D = 7) composed with DDIM at 10 and 100
steps:

1. one parent alone vs both composed: sequential in-process, and with the two forward passes in two threads;
2. 11 candidate weight vectors (the paper grid) in one batched pass per parent per step vs 11 separate chunks;
3. warm start (re-noise to mid-grid / 30 % of the grid) vs full sampling: network calls and time.

Run: ``.venv/bin/python bench/bench_compose.py [--repeats N]``. Every case runs once per round, rounds
interleaved (default 11); the table prints the minimum (least-disturbed round) and the median of each case, and
every ratio is taken from the MINIMA. Ratios matter, absolute times depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

# OpenMP workers that spin while waiting steal the core the other parent's thread needs (and collapse under
# machine load); must be set before torch starts. Override by exporting OMP_WAIT_POLICY=ACTIVE.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from gpc_ros.compose import (
    Composer,
    ComposerConfig,
    Parameterization,
    SamplerConfig,
    VPTime,
    WarmStart,
    WarmStartConfig,  # noqa: E402
    make_vp_scheduler,
)
from gpc_ros.compose.parent import ActionNormalization  # noqa: E402
from gpc_ros.compose.search import paper_grid  # noqa: E402

H, D, OBS_DIM, EMB = 16, 7, 32, 128


class MLPParent:
    """A small epsilon-prediction parent: obs MLP encoder + MLP denoiser on (x_t, time embedding, encoding)."""

    def __init__(self, name: str, seed: int, hidden: int = 512) -> None:
        """Random weights from ``seed``; ``hidden`` is the MLP width."""
        torch.manual_seed(seed)
        self.name = name
        self.parameterization = Parameterization.EPSILON
        self.action_horizon, self.action_dim = H, D
        self.normalization = ActionNormalization()
        self.time_convention = VPTime.from_scheduler(make_vp_scheduler())
        self.encoder = nn.Sequential(nn.Linear(OBS_DIM, EMB), nn.Mish(), nn.Linear(EMB, EMB)).eval()
        self.net = nn.Sequential(nn.Linear(H * D + 2 * EMB, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                                 nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, H * D)).eval()
        self.calls = 0

    def _time_embedding(self, timestep: float, rows: int) -> torch.Tensor:
        freqs = torch.exp(-math.log(10_000) * torch.arange(EMB // 2) / (EMB // 2))
        angle = timestep * freqs
        return torch.cat([angle.sin(), angle.cos()]).expand(rows, EMB)

    @torch.inference_mode()
    def encode(self, observation: torch.Tensor) -> torch.Tensor:
        """``(B, OBS_DIM)`` -> ``(B, EMB)``."""
        return self.encoder(observation)

    @torch.inference_mode()
    def predict(self, x_t: torch.Tensor, timestep: float, encoding: torch.Tensor) -> torch.Tensor:
        """Epsilon of ``x_t`` ``(M, H, D)``."""
        self.calls += 1
        m = x_t.shape[0]
        features = torch.cat([x_t.reshape(m, H * D), self._time_embedding(timestep, m), encoding], dim=1)
        return self.net(features).reshape(m, H, D)


def interleaved_ms(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Run every case once per round (order rotating) for ``repeats`` rounds: ``{name: (min_ms, median_ms)}``.

    Interleaving keeps the cases under the same machine load; the minimum is the least-disturbed run.
    """
    names = list(cases)
    for name in names:
        cases[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main() -> None:
    """Run the benchmark for every requested width."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds per figure")
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 1536],
                        help="MLP widths to run (512: ~0.8 M params; 1536: ~5 M, ~1 ms per call like a small U-Net)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    for hidden in args.hidden:
        bench_size(hidden, args.repeats)


def bench_size(hidden: int, repeats: int) -> None:
    """Print the table for parents of MLP width ``hidden``."""
    a, b = MLPParent("rgb", 0, hidden), MLPParent("pcd", 1, hidden)
    n_params = sum(p.numel() for p in a.net.parameters()) + sum(p.numel() for p in a.encoder.parameters())
    obs = torch.randn(1, OBS_DIM, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    x, enc = torch.randn(1, H, D), a.encode(obs)
    call = interleaved_ms({"call": lambda: [a.predict(x, 50.0, enc) for _ in range(20)]}, repeats)["call"][0] / 20
    print(f"\nload average (1/5/15 min): {os.getloadavg()}")
    print(f"parents: 2 x MLP width {hidden} ({n_params / 1e6:.2f} M params each, {call:.3f} ms per call), "
          f"H={H}, D={D}, one observation; torch {torch.__version__}, {threads} intra-op threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; DDIM; "
          f"min / median of {repeats} interleaved rounds; ratios from the minima")
    print(f"{'steps':>5s}  {'case':44s} {'min ms':>9s} {'median ms':>10s}  ratio")

    def show(steps: int, label: str, t: tuple[float, float], ratio: str = "") -> None:
        print(f"{steps:5d}  {label:44s} {t[0]:9.2f} {t[1]:10.2f}  {ratio}")

    for steps in (10, 100):
        base = dict(sampler=SamplerConfig("ddim", steps), return_parent_chunks=False)
        alone = Composer([a], ComposerConfig(**base))
        seq = Composer([a, b], ComposerConfig(**base))
        par = Composer([a, b], ComposerConfig(parallel_parents=True, **base))
        enc1, enc2 = alone.encode([obs]), seq.encode([obs, obs])
        grid = paper_grid()
        chunk = seq.compose(enc2, [0.5, 0.5], generator=0).actions_normalized[0]
        warm = {f: Composer([a, b], ComposerConfig(warm_start=WarmStartConfig(f), **base)) for f in (0.5, 0.3)}
        start = WarmStart(chunk, executed_steps=8)
        calls = {}
        for f, composer in warm.items():
            a.calls = 0
            composer.compose(enc2, [0.5, 0.5], generator=0, warm_start=start)
            calls[f] = a.calls
        t = interleaved_ms({
            "alone": lambda: alone.compose(enc1, [1.0], generator=0),
            "seq": lambda: seq.compose(enc2, [0.5, 0.5], generator=0),
            "par": lambda: par.compose(enc2, [0.5, 0.5], generator=0),
            "batched": lambda: seq.compose(enc2, grid, generator=0),
            "one_by_one": lambda: [seq.compose(enc2, w, generator=0) for w in grid],
            "warm0.5": lambda: warm[0.5].compose(enc2, [0.5, 0.5], generator=0, warm_start=start),
            "warm0.3": lambda: warm[0.3].compose(enc2, [0.5, 0.5], generator=0, warm_start=start),
        }, repeats)
        torch.set_num_threads(1)
        t1 = interleaved_ms({
            "alone": lambda: alone.compose(enc1, [1.0], generator=0),
            "seq": lambda: seq.compose(enc2, [0.5, 0.5], generator=0),
            "par": lambda: par.compose(enc2, [0.5, 0.5], generator=0),
        }, repeats)
        torch.set_num_threads(threads)
        par.close()
        r = {k: v[0] for k, v in t.items()}
        r1 = {k: v[0] for k, v in t1.items()}
        show(steps, "one parent alone", t["alone"])
        show(steps, "K=2 composed, sequential", t["seq"], f"{r['seq'] / r['alone']:.2f}x alone")
        show(steps, "K=2 composed, parents in 2 threads", t["par"], f"{r['par'] / r['alone']:.2f}x alone")
        show(steps, "one parent alone, 1 intra-op thread", t1["alone"])
        show(steps, "K=2 sequential, 1 intra-op thread", t1["seq"], f"{r1['seq'] / r1['alone']:.2f}x alone")
        show(steps, "K=2 in 2 threads, 1 intra-op thread each", t1["par"], f"{r1['par'] / r1['alone']:.2f}x alone")
        show(steps, "11 candidates batched (K=2)", t["batched"], f"{r['batched'] / r['seq']:.2f}x one candidate")
        show(steps, "11 candidates one at a time", t["one_by_one"], f"{r['one_by_one'] / r['batched']:.2f}x batched")
        for f in (0.5, 0.3):
            show(steps, f"warm start from {int(f * 100)} % of the grid", t[f"warm{f}"],
                 f"{r[f'warm{f}'] / r['seq']:.2f}x full; {calls[f]} vs {steps} calls per parent")


if __name__ == "__main__":
    main()
