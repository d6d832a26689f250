"""One TorchScript call per denoising step for K = 2 traced parents: can a whole chunk reach <= 1.15x one parent?

Issue #12. ``bench/probe_traced_handoff.py`` measured one step; this measures the whole observation-to-chunk path
(encode + DDIM 10 steps, the ``bench_graph.py`` parents: ``small`` RGB diffusion and DP3 checkpoints loaded as
hosts load them, heads traced, 1 intra-op thread, 2 inter-op threads), cases interleaved round by round:

* ``one traced``: the plain Composer with the RGB parent, traced head (bench_graph's ``one parent alone, traced``);
* ``K=2 sequential`` / ``K=2 threads``: the plain Composer with both traced parents, ``parallel_parents``
  False / True (``joint_step`` and ``joint_encode`` False; until session 12 the threads case left ``joint_step`` at
  its default "auto", which with ``parallel_parents`` True took the joint step at every step);
* ``K=2 forked``: a prototype Composer whose ``denoise`` runs both heads in ONE scripted call per step
  (``torch.jit.fork`` of the second head, the first inline, ``wait``), then the composer's own per-parent
  conversion, checks and combination unchanged;
* ``K=2 forked, no checks``: the same without the per-parent finite / shape checks (what cutting the composer's
  per-parent Python could reach at most);
* ``K=2 split-phase, fork each``: each parent a split-phase parent whose ``submit`` forks its own head (both heads
  forked, the composer's thread waits);
* ``K=2 joint_step (built)``: the plain Composer with ``ComposerConfig.joint_step`` True (what was built from this
  probe: :class:`~gpc_ros.policies.adapter.JointHeadsStep`, added after the probe's first runs);
* ``K=2 joint encode + joint step (built)``: the plain Composer with ``joint_step`` and ``joint_encode`` True: both
  encoder modules in one traced call per chunk as well (:class:`~gpc_ros.policies.adapter.JointEncoders`, session
  12), so the whole chunk is measured against ``one traced``;
* ``K=2 spinning workers (built)``: ``joint_step``, ``joint_encode`` and ``joint_step_workers`` True: head 2 in a
  worker process (pinned to the other CPU) that busy-polls shared memory during a chunk
  (:class:`~gpc_ros.policies.spin_worker.SpinningHeadsStep`, session 13); the worker's own trace is made in the
  background during the warm-up, which waits ``--worker-warmup-s`` for it; ``K=2 spinning, caller unpinned``: the
  same with the calling thread left unpinned (the worker still pinned to CPU 1);
* ``heads only: one`` / ``heads only: K=2 forked``: encode + 10 bare head calls, no composer at all (the floor).

Each K=2 chunk is checked against the sequential one for the same seed (``torch.equal``). Prints the load average
before and after. Run: ``PYTHONPATH=$PWD bench/measure.sh .venv/bin/python bench/probe_forked_step.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(2)

from bench_graph import fill, write_checkpoints  # noqa: E402  (bench/, next to this script)
from probe_traced_overlap import ForkSecond  # noqa: E402  (bench/, next to this script)

from gpc_ros.compose import Composer, ComposerConfig  # noqa: E402
from gpc_ros.compose.sampler import SamplerConfig  # noqa: E402
from gpc_ros.graph.host import HostConfig, HostCore, load_host_parent  # noqa: E402


def _fused(heads, args):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = [torch.jit.trace(h, a) for h, a in zip(heads, args)]
        return torch.jit.freeze(torch.jit.script(ForkSecond(*raw)).eval(), optimize_numerics=False)


class _Async(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x, t, c) -> torch.jit.Future[torch.Tensor]:
        return torch.jit.fork(self.head, x, t, c)


class _Pending:
    def __init__(self, future):
        self.future = future

    def result(self):
        return self.future.wait()


class SplitPhaseTraced:
    """Prototype: a traced parent as a split-phase parent; ``submit`` forks its head onto torch's inter-op pool."""

    def __init__(self, parent) -> None:
        self.parent = parent
        for a in ("name", "parameterization", "time_convention", "action_horizon", "action_dim", "normalization"):
            setattr(self, a, getattr(parent, a))
        self._async = None

    def encode(self, observation):
        return self.parent.encode(observation)

    def predict(self, x_t, timestep, encoding):
        return self.submit(x_t, timestep, encoding).result()

    def submit(self, x_t, timestep, encoding):
        t = torch.full((x_t.shape[0],), float(timestep))
        if self._async is None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                raw = torch.jit.trace(self.parent._denoiser.module, (x_t, t, encoding))
                self._async = torch.jit.freeze(torch.jit.script(_Async(raw)).eval(), optimize_numerics=False)
        return _Pending(self._async(x_t, t, encoding))


class ForkedComposer(Composer):
    """Prototype: both parents' heads in one scripted call per step; conversion and combination as in Composer."""

    def __init__(self, parents, config, checks: bool = True) -> None:
        super().__init__(parents, config)
        self.checks = checks
        self._fused = None

    def denoise(self, x, point, encodings, weights, active=None):
        from gpc_ros.compose.horizon import combine

        inputs = [self._parent_input(i, x, point) for i in range(2)]
        times = [torch.full((x.shape[0],), float(w.value)) for w, _ in inputs]
        if self._fused is None:
            args = [(xi, ti, ci) for (_, xi), ti, ci in zip(inputs, times, encodings)]
            self._fused = _fused([p._denoiser.module for p in self.parents], args)
        y = self._fused(inputs[0][1], times[0], encodings[0], inputs[1][1], times[1], encodings[1])
        with_x0 = self.operator.weights_sum_to_one and (self.sampler.uses_x0 or point.level.alpha <= 0.0)
        if self.checks:
            results = [self._convert(i, y[i], *inputs[i], point, x.dtype, with_x0) for i in range(2)]
        else:
            from gpc_ros.compose.parameterization import to_eps_x0

            results = [to_eps_x0(self._parameterizations[i], y[i], inputs[i][1], inputs[i][0].level.alpha,
                                 inputs[i][0].level.sigma, with_x0) for i in range(2)]
        eps_hat = combine([r[0] for r in results], weights)
        if with_x0:
            return eps_hat, combine([r[1] for r in results], weights)
        from gpc_ros.compose.parameterization import Parameterization, to_eps_x0

        return to_eps_x0(Parameterization.EPSILON, eps_hat, x, point.level.alpha, point.level.sigma)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--worker-warmup-s", type=float, default=5.0,
                    help="after its first chunk, leave the spinning worker this long to trace its head")
    args = ap.parse_args()
    load0 = os.getloadavg()
    print(f"load before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; torch {torch.__version__}, interop threads "
          f"{torch.get_num_interop_threads()}")
    checkpoints = write_checkpoints(Path(tempfile.mkdtemp(prefix="probe-forked-")))
    cores = {}
    for n in ("rgb", "pcd"):
        parent, observing = load_host_parent(HostConfig(name=n, checkpoint=checkpoints[n], trace_head=True))
        parent._denoiser.background = False
        cores[n] = HostCore(parent, observing)
    t_obs = time.time()
    for core in cores.values():
        fill(core, t_obs)
    obs = {n: c.window.at(t_obs)[0] for n, c in cores.items()}
    rgb, pcd = cores["rgb"].parent, cores["pcd"].parent
    seq = ComposerConfig(sampler=SamplerConfig("ddim", 10), return_parent_chunks=False)
    one = Composer([rgb], seq)
    two = {"K=2 sequential": Composer([rgb, pcd], seq),
           "K=2 threads": Composer([rgb, pcd], replace(seq, parallel_parents=True, joint_step=False,
                                                       joint_encode=False)),
           "K=2 forked": ForkedComposer([rgb, pcd], seq),
           "K=2 forked, no checks": ForkedComposer([rgb, pcd], seq, checks=False),
           "K=2 split-phase, fork each": Composer([SplitPhaseTraced(rgb), SplitPhaseTraced(pcd)], seq),
           "K=2 joint_step (built)": Composer([rgb, pcd], replace(seq, joint_step=True)),
           "K=2 joint encode + joint step (built)": Composer([rgb, pcd], replace(seq, joint_step=True,
                                                                               joint_encode=True)),
           "K=2 spinning workers (built)": Composer([rgb, pcd], replace(seq, joint_step=True, joint_encode=True,
                                                                      joint_step_workers=True)),
           "K=2 spinning, caller unpinned": Composer([rgb, pcd], replace(seq, joint_step=True,
                                                                              joint_encode=True,
                                                                              joint_step_workers=True))}
    spin = two["K=2 spinning workers (built)"]._joint
    print(f"spinning workers: ready {spin.wait_ready(120.0)}, pinned {spin.pin} (CPUs {spin.cpus})")
    two["K=2 spinning, caller unpinned"]._joint.pin = False  # the caller's thread (its worker is pinned)
    print(f"spinning workers, caller unpinned: ready {two['K=2 spinning, caller unpinned']._joint.wait_ready(120.0)}")
    for k in ("K=2 joint_step (built)", "K=2 joint encode + joint step (built)", "K=2 spinning workers (built)",
              "K=2 spinning, caller unpinned"):
        two[k]._joint.head.background = False
    w1, w2 = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, generator=g)
    t = torch.full((1,), 37.0)
    heads = [rgb._denoiser.module, pcd._denoiser.module]
    with torch.no_grad():
        encs = [rgb.encode(obs["rgb"]), pcd.encode(obs["pcd"])]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_head = torch.jit.freeze(torch.jit.trace(heads[0], (x, t, encs[0])).eval(), optimize_numerics=False)
    both_heads = _fused(heads, [(x, t, encs[0]), (x, t, encs[1])])

    def heads_one():
        with torch.no_grad():
            c = rgb.encode(obs["rgb"])
            for _ in range(10):
                one_head(x, t, c)

    def heads_two():
        with torch.no_grad():
            c0, c1 = rgb.encode(obs["rgb"]), pcd.encode(obs["pcd"])
            for _ in range(10):
                both_heads(x, t, c0, x, t, c1)

    cases = {"one traced": lambda: one.compose(one.encode([obs["rgb"]]), w1, generator=0)}
    for k, c in two.items():
        cases[k] = lambda c=c: c.compose(c.encode([obs["rgb"], obs["pcd"]]), w2, generator=0)
    cases["heads only: one"] = heads_one
    cases["heads only: K=2 forked"] = heads_two

    ref = two["K=2 sequential"].compose(two["K=2 sequential"].encode([obs["rgb"], obs["pcd"]]), w2, generator=0)
    for k in list(two)[1:]:
        got = cases[k]()
        print(f"{k}: chunk torch.equal to sequential: {torch.equal(got.actions, ref.actions)}")
    with torch.no_grad():
        joint_encoded = two["K=2 joint encode + joint step (built)"].encode([obs["rgb"], obs["pcd"]])
    print("joint encode: encodings torch.equal to each parent's encode:",
          [torch.equal(a, b) for a, b in zip(joint_encoded, encs)])
    time.sleep(args.worker_warmup_s)  # the spinning worker traces its head in the background meanwhile
    times = {k: [] for k in cases}
    for _ in range(3):
        for f in cases.values():
            f()
    for k in ("K=2 spinning workers (built)", "K=2 spinning, caller unpinned"):
        two[k]._joint.reset_stats()  # the split of a step below: timed rounds only
    for r in range(args.rounds):
        items = list(cases.items())
        for k, f in (items if r % 2 == 0 else items[::-1]):
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    load1 = os.getloadavg()
    base = statistics.median(times["one traced"])
    print(f"load after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; median of {args.rounds} interleaved rounds")
    print(f"{'case':40s} {'ms/chunk':>9s} {'x one traced':>13s}")
    for k, v in times.items():
        print(f"{k:40s} {statistics.median(v) * 1e3:9.2f} {statistics.median(v) / base:12.2f}x")
    for k, c in two.items():
        st = c.stats
        print(f"{k}: steps joint {st.joint_steps}, threads {st.parallel_steps}, one after the other "
              f"{st.sequential_steps}; joint encode calls {st.joint_encodes}, chunks {st.chunks}")
    for k in ("K=2 spinning workers (built)", "K=2 spinning, caller unpinned"):
        st = two[k]._joint
        n = max(st.worker_steps, 1)
        print(f"{k}: steps in the worker {st.worker_steps}, in process (fallback) {st.fallback_steps}; per step (mean "
              f"over the timed rounds): caller's head 1 {st.head_s / n * 1e3:.3f} ms, caller's wait after it "
              f"{st.wait_s / n * 1e3:.3f} ms; worker {st.worker_stats()}")
    for c in two.values():
        c.close()
    print(f"heads only: K=2 forked / heads only: one = "
          f"{statistics.median(times['heads only: K=2 forked']) / statistics.median(times['heads only: one']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
