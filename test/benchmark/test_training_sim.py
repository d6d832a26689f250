"""Training on the simulated cell's data resumes bit-exactly (the parents' trainings are cut by session ends).

The data is ``data/push_red_mini``: two real ``gpc-ros collect --task push_red`` episodes, cut and down-sampled by
``data/make_push_red_mini.py`` (24 steps, 32x32 images, 64-point clouds) so a tiny model trains in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpc_ros.policies.checkpoint import load_policy
from gpc_ros.policies.presets import policy_config
from gpc_ros.policies.training import TrainConfig, Trainer

DATA = Path(__file__).parent / "data" / "push_red_mini"
KEYS = {"action": [10], "observation.state": [10], "observation.image": [32, 32, 3],
        "observation.pointcloud": [64, 3]}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainer(out: Path, policy_type: str, modality: str | None = None) -> Trainer:
    config = policy_config(policy_type, "tiny", KEYS, modality=modality)
    train = TrainConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, val_every=4, checkpoint_every=4,
                        val_fraction=0.5, ema_max_decay=0.9, progress=False)
    return Trainer(policy_type, config, DATA, out, train)


@pytest.mark.parametrize("policy_type,modality", [("diffusion", None), ("dp3", None), ("flow", "pointcloud")])
def test_training_on_push_red_resumes_bit_exactly(tmp_path: Path, policy_type: str, modality: str | None) -> None:
    straight = trainer(tmp_path / "straight", policy_type, modality)
    assert straight.policy.config.action_dim == 10 and len(straight.train_set) == 24
    straight.run()
    cut = trainer(tmp_path / "cut", policy_type, modality)
    for _ in range(8):  # killed after its step-8 checkpoint
        cut.train_step()
    cut.save()
    resumed = trainer(tmp_path / "cut", policy_type, modality)
    resumed.resume()
    assert resumed.step == 8
    resumed.run()
    for (name, a), (_, b) in zip(straight.ema.model.state_dict().items(), resumed.ema.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]
    shipped = load_policy(tmp_path / "cut" / "checkpoint")
    for (name, a), (_, b) in zip(straight.ema.model.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(a, b), name
