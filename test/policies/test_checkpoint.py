"""Checkpoints: save -> load gives identical outputs; corrupt or mismatched checkpoints fail with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gpc_ros.policies import CheckpointError, load_parent, load_policy, make_policy, save_policy
from gpc_ros.policies.checkpoint import _sha256
from gpc_ros.policies.normalization import fit_min_max

from .conftest import observation, tiny_config


def trained_like(policy_type: str, **kwargs):
    """A tiny policy with non-trivial normalisation and perturbed (non-initial) weights."""
    torch.manual_seed(3)
    config = tiny_config(policy_type, **kwargs)
    rng = np.random.default_rng(0)
    policy = make_policy(policy_type, config, fit_min_max(rng.uniform(0.2, 0.7, (40, 3))),
                         fit_min_max(rng.uniform(0.1, 0.5, (40, 3))))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("policy_type,kwargs", [("diffusion", {}), ("dp3", {"parameterization": "v_prediction"}),
                                                ("flow", {"modality": "pointcloud"})])
def test_save_load_gives_identical_outputs_and_description(tmp_path: Path, policy_type, kwargs) -> None:
    policy = trained_like(policy_type, **kwargs)
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config == policy.config and type(loaded) is type(policy)
    assert loaded.action_normalization == policy.action_normalization
    assert loaded.state_normalization == policy.state_normalization
    a, b = policy.as_parent("a"), load_parent(tmp_path / "ckpt", "b")
    obs = observation(policy.config, batch=2)
    enc_a, enc_b = a.encode(obs), b.encode(obs)
    assert torch.equal(enc_a, enc_b)
    x = torch.randn(2, 8, 3)
    assert torch.equal(a.predict(x, 12.0, enc_a), b.predict(x, 12.0, enc_b))
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["parameterization"] == policy.parameterization.value
    assert meta["observation_keys"] == list(policy.expected_keys)
    assert meta["config"]["action_horizon"] == 8 and meta["normalization"]["action"]["kind"] == "min_max"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_policy(trained_like("diffusion"), tmp_path / "ckpt")


def edit_config(path: Path, change) -> None:
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))


def rewrite_weights(path: Path, change) -> None:
    """Replace the weights and record their new sha256, as a consistent but wrong checkpoint would."""
    tensors = load_file(str(path / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(path / "model.safetensors"))
    edit_config(path, lambda m: m["weights"].__setitem__("sha256", _sha256(path / "model.safetensors")))


def truncate(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


CASES = {
    "truncated weights": (truncate, ["model.safetensors is corrupt", "sha256"]),
    "truncated weights, sha updated": (
        lambda p: (truncate(p), edit_config(p, lambda m: m["weights"].__setitem__(
            "sha256", _sha256(p / "model.safetensors")))), ["not a readable safetensors file"]),
    "weights file missing": (lambda p: (p / "model.safetensors").unlink(), ["weights file", "missing"]),
    "config not JSON": (lambda p: (p / "config.json").write_text("{ nope"), ["not valid JSON"]),
    "other format": (lambda p: edit_config(p, lambda m: m.__setitem__("format", "lerobot")), ["'format' must be"]),
    "future version": (lambda p: edit_config(p, lambda m: m.__setitem__("format_version", 9)), ["format_version"]),
    "unknown policy type": (lambda p: edit_config(p, lambda m: m.__setitem__("policy_type", "act")),
                            ["policy_type must be one of", "'act'"]),
    "unknown parameterisation": (
        lambda p: edit_config(p, lambda m: m["config"].__setitem__("parameterization", "score")),
        ["config: DiffusionConfig.parameterization must be one of", "'score'"]),
    "summary disagrees with config": (
        lambda p: edit_config(p, lambda m: m.__setitem__("parameterization", "sample")),
        ["'parameterization' is 'sample'", "config mismatch"]),
    "missing config field": (lambda p: edit_config(p, lambda m: m["config"]["observation"]["image"].pop("width")),
                             ["config.observation.image lacks field(s) ['width']"]),
    "unknown config field": (lambda p: edit_config(p, lambda m: m["config"]["unet"].__setitem__("dropout", 0.1)),
                             ["config.unet has unknown field(s) ['dropout']"]),
    "wrong shapes (config edited)": (
        lambda p: edit_config(p, lambda m: m["config"]["unet"].__setitem__("down_dims", [16, 48])),
        ["has shape", "the config describes"]),
    "missing tensors": (lambda p: rewrite_weights(p, lambda t: t.pop(sorted(t)[0])), ["missing tensors ["]),
    "extra tensors": (lambda p: rewrite_weights(p, lambda t: t.__setitem__("head.bias", torch.zeros(3))),
                      ["unexpected tensors ['head.bias']"]),
    "non-finite weights": (
        lambda p: rewrite_weights(p, lambda t: t[sorted(t)[0]].view(-1).__setitem__(0, float("nan"))),
        ["contains NaN or inf"]),
    "float16 weights": (lambda p: rewrite_weights(p, lambda t: t.update({k: v.half() for k, v in t.items()})),
                        ["dtype torch.float16"]),
    "bad normalisation": (lambda p: edit_config(p, lambda m: m["normalization"]["action"].__setitem__(
        "scale", [1.0, -1.0, 1.0])), ["normalization.action", "scale must be finite and > 0"]),
    "normalisation of other dim": (lambda p: edit_config(p, lambda m: m["normalization"]["state"].update(
        offset=[0.0, 0.0], scale=[1.0, 1.0])), ["state normalization has 2 dims", "state_dim = 3"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_or_mismatched_checkpoint_is_rejected_clearly(saved: Path, case: str) -> None:
    damage, words = CASES[case]
    damage(saved)
    with pytest.raises(CheckpointError) as info:
        load_policy(saved)
    message = str(info.value)
    assert str(saved) in message
    for word in words:
        assert word in message, message


def test_not_a_checkpoint_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_policy(tmp_path)
