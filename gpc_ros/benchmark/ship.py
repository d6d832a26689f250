r"""Ship a trained parent: copy its checkpoint to ``parents/<name>/`` with its provenance and a reference chunk.

    gpc-ros benchmark ship --checkpoint /work/data/runs/rgb/checkpoint --name push_red_diffusion_rgb \\
        --dataset /work/data/push_red_snap --command "gpc-ros train --policy diffusion ..." [--dest parents]

Writes (atomically, through a temporary folder) ``model.safetensors`` and ``config.json`` (the checkpoint),
``provenance.json`` (the command that regenerates it, its seed, training step, dataset path and content hash,
weights sha256) and ``reference_chunk.npz``: an observation window of the dataset (episode 0, step 1), the seed, and
the chunk the parent alone produces from it through the Composer (``sampler_steps`` DDIM / flow Euler steps,
generator :func:`gpc_ros.benchmark.episode.step_generator` ``(0, 0)``). test/benchmark checks that the shipped parent,
loaded by name, reproduces that chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from gpc_ros.benchmark.episode import build_composer, step_generator
from gpc_ros.benchmark.plan import Arm
from gpc_ros.policies.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_policy, read_description
from gpc_ros.policies.dataset import EpisodeDataset
from gpc_ros.policies.registry import PROVENANCE_FILE, REFERENCE_FILE

REFERENCE_SEED = 0
REFERENCE_SAMPLER_STEPS = 10


def reference_chunk(policy, observation: dict[str, np.ndarray], name: str = "parent",
                    sampler_steps: int = REFERENCE_SAMPLER_STEPS) -> np.ndarray:
    """The ``(H, D)`` chunk of ``policy`` alone for ``observation`` (seeded; see the module docstring)."""
    composer = build_composer(Arm((name,)), {name: policy}, sampler_steps)
    with torch.no_grad():
        enc = composer.encode([observation])
        out = composer.compose(enc, [1.0], generator=step_generator(REFERENCE_SEED, 0))
    return out.actions[0, 0].numpy()


def ship(checkpoint: Path, name: str, dataset: Path, command: str, dest: Path, dataset_hash: str,
         code_commit: str | None = None) -> Path:
    """Write ``dest/name`` (see the module docstring); returns it."""
    meta = read_description(checkpoint)
    policy = load_policy(checkpoint)
    ds = EpisodeDataset(dataset, policy.expected_keys, policy.config.observation.obs_horizon,
                        policy.config.action_horizon, episodes=[0])
    observation = {k: v for k, v in ds.batch([1]).items() if k != "action"}
    chunk = reference_chunk(policy, observation, name)
    training = meta.get("training", {})
    provenance = {"name": name, "command": command, "code_commit": code_commit,
                  "seed": training.get("train_config", {}).get("seed"),
                  "step": training.get("step"), "planned_steps": training.get("train_config", {}).get("steps"),
                  "train_config": training.get("train_config"), "dataset": str(dataset),
                  "dataset_sha256": dataset_hash, "train_episodes": training.get("train_episodes"),
                  "last_val_loss": training.get("last_val_loss"), "weights_sha256": meta["weights"]["sha256"],
                  "policy_type": meta["policy_type"], "modality": meta["modality"],
                  "reference": {"file": REFERENCE_FILE, "seed": REFERENCE_SEED,
                                "sampler_steps": REFERENCE_SAMPLER_STEPS, "dataset_episode": 0, "dataset_step": 1}}
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest))
    tmp.chmod(0o755)  # mkdtemp makes it private; installed data must be world-readable
    try:
        for f in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(checkpoint / f, tmp / f)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
        np.savez_compressed(tmp / REFERENCE_FILE, chunk=chunk, **{k: v for k, v in observation.items()})
        final = dest / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
