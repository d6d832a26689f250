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
