"""Fixed-seed regression against stored artefacts: checkpoints written by this code must keep loading and keep
giving the same predictions (a change of architecture, checkpoint format, normalisation or time embedding shows up
here). Regenerate deliberately with ``GPC_REGENERATE_REFERENCE=1 pytest test/policies/test_reference.py``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpc_ros.policies import load_parent, make_policy, save_policy
from gpc_ros.policies.normalization import fit_min_max

from .conftest import observation, tiny_config

DATA = Path(__file__).parent / "data"
CASES = {"diffusion_rgb": ("diffusion", {}), "flow_pointcloud": ("flow", {"modality": "pointcloud"})}


def reference_inputs(config) -> dict[str, torch.Tensor]:
    obs = {k: torch.from_numpy(v) for k, v in observation(config, batch=2, seed=11).items()}
    x_t = torch.from_numpy(np.random.default_rng(12).standard_normal((2, 8, 3)).astype(np.float32))
    return {**obs, "x_t": x_t}


def regenerate(name: str) -> None:
    policy_type, kwargs = CASES[name]
    config = tiny_config(policy_type, **kwargs)
    torch.manual_seed(5)
    rng = np.random.default_rng(13)
    policy = make_policy(policy_type, config, fit_min_max(rng.uniform(0.2, 0.7, (40, 3))),
                         fit_min_max(rng.uniform(0.1, 0.5, (40, 3))))
    save_policy(policy, DATA / name)
    parent = policy.as_parent(name)
    inputs = reference_inputs(config)
    encoding = parent.encode({k: v for k, v in inputs.items() if k != "x_t"})
    prediction = parent.predict(inputs["x_t"], 37.0, encoding).contiguous()
    save_file({**inputs, "encoding": encoding.contiguous(), "prediction": prediction},
              str(DATA / f"{name}_expected.safetensors"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_stored_checkpoint_loads_and_predicts_as_recorded(name: str) -> None:
    if os.environ.get("GPC_REGENERATE_REFERENCE") == "1":
        regenerate(name)
    expected = load_file(str(DATA / f"{name}_expected.safetensors"))
    parent = load_parent(DATA / name, name)
    encoding = parent.encode({k: v for k, v in expected.items() if k.startswith("observation.")})
    torch.testing.assert_close(encoding, expected["encoding"], rtol=1e-5, atol=1e-5)
    prediction = parent.predict(expected["x_t"], 37.0, encoding)
    torch.testing.assert_close(prediction, expected["prediction"], rtol=1e-5, atol=1e-5)
