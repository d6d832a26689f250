"""diffusers is imported only when a DDPM/DDIM scheduler is built, never by importing the core or the graph composer.

Importing diffusers pulls torch._dynamo, sympy and httpcore: it took most of a node's start-up (docs/graph.md).
Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import gpc_ros

ROOT = pathlib.Path(gpc_ros.__file__).resolve().parents[1]


def loaded_after(code: str) -> list[str]:
    """The top-level modules of interest in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + ("\nimport json, sys\n"
                    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'diffusers', 'sympy'})))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True,
                         env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_core_and_the_graph_composer_loads_no_diffusers() -> None:
    code = "import gpc_ros.compose, gpc_ros.compose.sampler, gpc_ros.compose.schedule, gpc_ros.graph.composition"
    assert loaded_after(code) == []


def test_composing_on_a_flow_grid_needs_no_diffusers() -> None:
    code = (
        "import torch\n"
        "from gpc_ros.compose import Composer, ComposerConfig, FlowTime, SamplerConfig\n"
        "from gpc_ros.compose.analytic import GaussianParent\n"
        "p = GaussianParent('a', 'flow_velocity', FlowTime(), 4, 2)\n"
        "c = Composer([p], ComposerConfig(sampler=SamplerConfig('flow_euler', 5)))\n"
        "c.compose(c.encode([torch.zeros(1, 4, 2)]), [1.0], generator=0)\n"
    )
    assert loaded_after(code) == []


def test_building_a_ddim_sampler_imports_diffusers() -> None:
    """The positive control: the probe does see diffusers once a scheduler is built."""
    code = "from gpc_ros.compose import SamplerConfig, make_sampler\nmake_sampler(SamplerConfig('ddim', 5))"
    assert "diffusers" in loaded_after(code)


def test_threads_building_their_first_schedulers_at_once_all_get_them() -> None:
    """Without a lock, threads importing diffusers at once saw its half-initialised lazy module (ImportError in the
    composer node, whose executor threads handle two hosts' announcements at the same time). A race: without the
    lock 8 threads failed in about half of the fresh interpreters, so 4 of them catch it in most runs, not all."""
    code = (
        "import threading\n"
        "from gpc_ros.compose import SamplerConfig, make_sampler\n"
        "barrier, errors = threading.Barrier(8), []\n"
        "def build():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        make_sampler(SamplerConfig('ddim', 10))\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=build) for _ in range(8)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "assert not errors, errors\n"
    )
    for _ in range(4):
        assert "diffusers" in loaded_after(code)
