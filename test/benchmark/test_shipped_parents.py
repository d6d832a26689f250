"""Shipped parents (``parents/<name>/``): found by name, loadable, and they reproduce their stored fixed-seed chunk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gpc_ros.benchmark.ship import reference_chunk
from gpc_ros.policies.checkpoint import CONFIG_FILE
from gpc_ros.policies.registry import (
    ENV_VAR,
    PROVENANCE_FILE,
    REFERENCE_FILE,
    find_parent,
    list_parents,
    load_named_parent,
    load_named_policy,
    provenance,
    resolve_checkpoint,
)

SOURCE = Path(__file__).resolve().parents[2] / "parents"
SHIPPED = sorted(p.name for p in SOURCE.iterdir() if (p / CONFIG_FILE).is_file()) if SOURCE.is_dir() else []


def test_the_package_ships_parents_for_each_family() -> None:
    assert SHIPPED, f"no shipped parent in {SOURCE}"
    for name in SHIPPED:
        assert find_parent(name) == SOURCE / name or find_parent(name).name == name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_parent_loads_by_name_and_reproduces_its_reference_chunk(name: str) -> None:
    torch.set_num_threads(1)
    prov = provenance(name)
    for key in ("command", "seed", "dataset_sha256", "step", "weights_sha256"):
        assert prov.get(key) is not None, f"{name}: provenance.json lacks {key}"
    assert prov["command"].startswith("gpc-ros train") and len(prov["dataset_sha256"]) == 64
    policy = load_named_policy(name)
    assert policy.config.action_dim == 10
    with np.load(resolve_checkpoint(name) / REFERENCE_FILE) as ref:
        observation = {k: ref[k] for k in ref.files if k != "chunk"}
        expected = ref["chunk"]
    chunk = reference_chunk(policy, observation, name)
    assert chunk.shape == (policy.config.action_horizon, 10)
    np.testing.assert_allclose(chunk, expected, rtol=0, atol=1e-5)
    # a different seed-free input (another observation) gives another chunk: the reference is not a constant
    other = {k: (v[..., ::-1, :].copy() if v.ndim >= 4 else v + 0.05) for k, v in observation.items()}
    assert np.abs(reference_chunk(policy, other, name) - expected).max() > 1e-4
    parent = load_named_parent(name)
    assert parent.name == name


@pytest.mark.parametrize("name", SHIPPED)
def test_the_provenance_command_builds_the_shipped_model(name: str) -> None:
    """The recorded ``gpc-ros train`` command, parsed by the train CLI, asks for the family, modality,
    parameterisation, seed, steps and action normalisation that the shipped checkpoint has."""
    import shlex

    from gpc_ros.policies.presets import policy_config
    from gpc_ros.policies.train_cli import build_parser

    prov = provenance(name)
    argv = shlex.split(prov["command"].split("  (")[0])[2:]  # the command itself, without "gpc-ros train"
    args = build_parser().parse_args(argv)
    shipped = load_named_policy(name)
    assert args.policy == shipped.policy_type
    wanted = policy_config(args.policy, args.size, None, args.modality, args.parameterization)
    assert wanted.observation.modality == shipped.config.observation.modality, prov["command"]
    assert wanted.parameterization == shipped.config.parameterization, prov["command"]
    assert args.seed == prov["seed"] and args.steps == prov["planned_steps"]
    assert (args.stop_at or args.steps) == prov["step"]
    if args.action_normalization_from:
        assert load_named_policy(args.action_normalization_from).action_normalization == shipped.action_normalization


def test_registry_errors_and_search_path(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="no shipped parent named 'nope'"):
        find_parent("nope")
    with pytest.raises(ValueError, match="not a policy checkpoint folder"):
        resolve_checkpoint(tmp_path)
    if SHIPPED:  # a lab's own folder in GPC_ROS_PARENTS comes first
        own = tmp_path / "mine" / SHIPPED[0]
        shutil.copytree(SOURCE / SHIPPED[0], own)
        (own / PROVENANCE_FILE).write_text(json.dumps({"command": "mine"}))
        monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
        assert find_parent(SHIPPED[0]) == own and list_parents()[SHIPPED[0]] == own
        assert provenance(SHIPPED[0]) == {"command": "mine"}



# (pair, weights, the parent alone, same chunk?): a parent alone samples on its own grid; composed, the pair samples
# on its first VP parent's DDIM grid. Where both grids are the same (RGB + DP3), an endpoint is exactly its parent
# alone; the flow parent alone integrates with Euler on its own time grid, so w_flow = 1 on the DDIM grid is not it.
ENDPOINTS = [(("push_red_diffusion_rgb", "push_red_dp3_pcd"), (1.0, 0.0), "push_red_diffusion_rgb", True),
             (("push_red_diffusion_rgb", "push_red_dp3_pcd"), (0.0, 1.0), "push_red_dp3_pcd", True),
             (("push_red_diffusion_rgb", "push_red_flow_pcd"), (1.0, 0.0), "push_red_diffusion_rgb", True),
             (("push_red_diffusion_rgb", "push_red_flow_pcd"), (0.0, 1.0), "push_red_flow_pcd", False),
             (("push_red_diffusion_rgb", "push_red_dp3_xyzrgb_step100"), (1.0, 0.0), "push_red_diffusion_rgb", True),
             (("push_red_diffusion_rgb", "push_red_dp3_xyzrgb_step100"), (0.0, 1.0), "push_red_dp3_xyzrgb_step100",
              True),
             (("push_red_diffusion_rgb", "push_red_flow_xyzrgb_step500"), (1.0, 0.0), "push_red_diffusion_rgb", True),
             (("push_red_diffusion_rgb", "push_red_flow_xyzrgb_step500"), (0.0, 1.0), "push_red_flow_xyzrgb_step500",
              False)]


@pytest.mark.parametrize("pair,weights,alone,same", [e for e in ENDPOINTS if set(e[0]) <= set(SHIPPED)],
                         ids=lambda v: "+".join(v) if isinstance(v, tuple) and isinstance(v[0], str) else str(v))
def test_a_grid_endpoint_is_exactly_its_parent_alone_where_the_grids_agree(pair, weights, alone, same) -> None:
    """The benchmark report counts the parent-alone arm as the pair's grid endpoint (docs/results.md) only because
    the chunks are equal bit for bit: weights (1, 0) / (0, 1) on the pair's sampler vs the parent on its own."""
    from gpc_ros.benchmark.episode import build_composer, step_generator
    from gpc_ros.benchmark.plan import Arm

    torch.set_num_threads(1)
    policies, observations = {}, {}
    for name in pair:
        policies[name] = load_named_policy(name)
        with np.load(resolve_checkpoint(name) / REFERENCE_FILE) as ref:
            observations[name] = {k: ref[k] for k in ref.files if k != "chunk"}
    with torch.no_grad():
        pair_composer = build_composer(Arm(pair, weights), policies, 10)
        encodings = pair_composer.encode([observations[name] for name in pair])
        composed = pair_composer.compose(encodings, weights, generator=step_generator(7, 3)).actions[0, 0].numpy()
        own = build_composer(Arm((alone,)), policies, 10)
        single = own.compose(own.encode([observations[alone]]), [1.0],
                             generator=step_generator(7, 3)).actions[0, 0].numpy()
        inner = pair_composer.compose(encodings, (0.5, 0.5), generator=step_generator(7, 3)).actions[0, 0].numpy()
    if same:
        np.testing.assert_array_equal(composed, single, err_msg=f"{pair} at {weights} vs {alone} alone")
    else:
        assert np.abs(composed - single).max() > 1e-3, f"{pair} at {weights}: the grids differ, the chunks should"
    assert np.abs(inner - single).max() > 1e-3  # the other parent does matter at an inner weight: the check can fail
