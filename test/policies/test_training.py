"""Training: the dataset windows, overfitting a tiny dataset, validation loss, exact resume, the train CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gpc_ros.cli import main as gpc_ros_main
from gpc_ros.policies import load_policy
from gpc_ros.policies.dataset import EpisodeDataset, split_episodes, write_episodes
from gpc_ros.policies.evaluation import main as evaluation_main
from gpc_ros.policies.training import TrainConfig, Trainer

from .conftest import tiny_config, write_tiny_dataset


def test_windows_pad_the_first_frame_before_and_the_last_action_after(tmp_path: Path) -> None:
    t = 5
    episode = {"action": np.arange(t * 2, dtype=np.float32).reshape(t, 2),
               "observation.state": np.arange(t, dtype=np.float32)[:, None] * 10}
    write_episodes(tmp_path, [episode, {k: v + 100 for k, v in episode.items()}], fps=10)
    ds = EpisodeDataset(tmp_path, ["observation.state"], obs_horizon=2, action_horizon=4)
    assert len(ds) == 10
    b = ds.batch([0, 3, 5])
    np.testing.assert_array_equal(b["observation.state"][:, :, 0], [[0, 0], [20, 30], [100, 100]])
    np.testing.assert_array_equal(b["action"][1, :, 0], [6, 8, 8, 8])  # steps 3, 4, then the last action repeated
    np.testing.assert_array_equal(b["action"][2, :, 0], [100, 102, 104, 106])  # never crosses into episode 0


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a gpc_ros episode dataset"):
        EpisodeDataset(tmp_path, [], 2, 4)
    with pytest.raises(ValueError, match="equal lengths"):
        write_episodes(tmp_path, [{"action": np.zeros((3, 2)), "observation.state": np.zeros((4, 1))}], 10)
    write_episodes(tmp_path, [{"action": np.zeros((3, 2))}], 10)
    with pytest.raises(KeyError, match="has no \\['observation.image'\\]"):
        EpisodeDataset(tmp_path, ["observation.image"], 2, 4)
    assert split_episodes(10, 0.2) == (list(range(8)), [8, 9])
    with pytest.raises(ValueError, match="leave none to train"):
        split_episodes(1, 0.5)


def make_trainer(dataset: Path, out: Path, policy_type: str = "diffusion", **train) -> Trainer:
    train.setdefault("val_fraction", 0.25)
    config = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, val_every=10, checkpoint_every=10,
                         ema_max_decay=0.9, progress=False, **train)
    return Trainer(policy_type, tiny_config(policy_type), dataset, out, config)


@pytest.mark.parametrize("policy_type", ["diffusion", "dp3", "flow"])
def test_overfits_a_tiny_dataset(tmp_path: Path, policy_type: str) -> None:
    """Two episodes, 200 steps: the mean training loss of the last 10 steps is at least 4x below that of the first
    10, and the EMA validation loss on the (same) episodes with fixed noise at least 4x below the initial model's.
    (Measured: diffusion 6.8x / 6.3x, dp3 (sample) >200x, flow 5.1x / 6.0x; epsilon and velocity targets keep an
    irreducible variance, so their factors are modest.)"""
    data = write_tiny_dataset(tmp_path / "data", 2, seed=4)
    trainer = make_trainer(data, tmp_path / "run", policy_type, steps=200, val_fraction=0.0)
    trainer.val_set = trainer.train_set  # overfitting: validate on the training episodes
    before = trainer.validation_loss(trainer.policy)
    losses = [trainer.train_step() for _ in range(200)]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    after = trainer.validation_loss()
    print(f"{policy_type}: train loss {first:.3f} -> {last:.3f}, EMA val loss {before:.3f} -> {after:.3f}")
    assert last < first / 4, (first, last)
    assert after < before / 4, (before, after)


def test_resume_equals_an_uninterrupted_run(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = make_trainer(tiny_dataset, tmp_path / "a", steps=30)
    straight.run()
    interrupted = make_trainer(tiny_dataset, tmp_path / "b", steps=20)
    interrupted.run()  # checkpoints at 10 and 20, then "stops"
    resumed = make_trainer(tiny_dataset, tmp_path / "b", steps=30)
    # a run resumed with a changed total is a different LR schedule: refused
    with pytest.raises(ValueError, match="training config differs"):
        resumed.resume()
    # same run settings (the first run was planned for 30 steps but killed after its step-20 checkpoint)
    planned = make_trainer(tiny_dataset, tmp_path / "c", steps=30)
    for _ in range(20):
        planned.train_step()
    planned.save()
    resumed = make_trainer(tiny_dataset, tmp_path / "c", steps=30)
    resumed.resume()
    assert resumed.step == 20
    resumed.run()
    for (name, a), (_, b) in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(straight.ema.model.state_dict().items(), resumed.ema.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]
    # the shipped checkpoint is the EMA model, loadable on its own
    shipped = load_policy(tmp_path / "c" / "checkpoint")
    for (name, a), (_, b) in zip(straight.ema.model.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_parent_trained_in_another_parents_action_space_composes_with_it(tmp_path: Path) -> None:
    """Two datasets of the same task never have the same min-max: parents fitted on each cannot be composed. Trained
    with ``action_normalization_from`` the second parent shares the first one's normalised space and composes."""
    from gpc_ros.benchmark.episode import build_composer
    from gpc_ros.benchmark.plan import Arm

    first = make_trainer(write_tiny_dataset(tmp_path / "d1", 4, seed=1), tmp_path / "a", steps=10)
    first.run()
    other_data = write_tiny_dataset(tmp_path / "d2", 4, seed=2)
    own = make_trainer(other_data, tmp_path / "b", "dp3", steps=10)
    shared = make_trainer(other_data, tmp_path / "c", "dp3", steps=10,
                          action_normalization_from=str(tmp_path / "a" / "checkpoint"))
    assert own.policy.action_normalization != first.policy.action_normalization
    assert shared.policy.action_normalization == first.policy.action_normalization
    shared.run()
    parents = {"a": load_policy(tmp_path / "a" / "checkpoint"), "c": load_policy(tmp_path / "c" / "checkpoint")}
    assert parents["c"].action_normalization == parents["a"].action_normalization
    build_composer(Arm(("a", "c"), (0.5, 0.5)), parents, 3)  # accepted
    with pytest.raises(ValueError, match="normalises actions differently"):
        build_composer(Arm(("a", "b"), (0.5, 0.5)), {"a": parents["a"], "b": own.policy}, 3)
    # the setting is part of the run: resuming without it is refused
    with pytest.raises(ValueError, match="training config differs"):
        make_trainer(other_data, tmp_path / "c", "dp3", steps=10).resume()
    with pytest.raises(ValueError, match="TrainConfig.action_normalization_from .* cannot be loaded"):
        make_trainer(other_data, tmp_path / "d", "dp3", steps=10, action_normalization_from=str(tmp_path / "none"))


def test_resume_refuses_another_model(tiny_dataset: Path, tmp_path: Path) -> None:
    make_trainer(tiny_dataset, tmp_path, steps=10).run()
    other = Trainer("dp3", tiny_config("dp3"), tiny_dataset, tmp_path,
                    TrainConfig(batch_size=16, steps=10, progress=False))
    with pytest.raises(ValueError, match="its policy config differs from this run's"):
        other.resume()


def test_cli_trains_on_a_synthetic_task_and_writes_a_loadable_checkpoint(tmp_path: Path, capsys) -> None:
    args = ["train", "--policy", "flow", "--modality", "pointcloud", "--size", "tiny", "--dataset",
            str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--synthetic", "4", "--synthetic-points", "64",
            "--synthetic-image-size", "32", "--steps", "12", "--batch-size", "16", "--val-every", "6",
            "--checkpoint-every", "6", "--no-progress", "--evaluate"]
    assert gpc_ros_main(args) == 0
    out = capsys.readouterr().out
    assert "held-out action RMSE" in out and "ratio to mean baseline" in out
    policy = load_policy(tmp_path / "run" / "checkpoint")
    assert policy.policy_type == "flow" and policy.config.observation.modality == "pointcloud"
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [6, 12]
    # resuming a finished run with the same settings succeeds and trains no further
    assert gpc_ros_main(args[:-1] + ["--resume"]) == 0
    assert "steps 12 -> 12" in capsys.readouterr().out
    # the evaluation CLI composes checkpoints (here the same one twice) through the core
    ckpt = str(tmp_path / "run" / "checkpoint")
    assert evaluation_main(["--checkpoint", ckpt, "--checkpoint", ckpt, "--weights", "0.3", "0.7", "--dataset",
                            str(tmp_path / "data"), "--val-fraction", "0.25", "--samples", "8", "--steps", "3"]) == 0
    assert "0.3 x" in capsys.readouterr().out
    assert evaluation_main(["--checkpoint", ckpt, "--checkpoint", ckpt, "--grid", "--dataset", str(tmp_path / "data"),
                            "--val-fraction", "0.25", "--samples", "4", "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and lines[0].startswith("w = (0.0, 1.0)") and lines[-1].startswith("w = (1.0, 0.0)")


@pytest.mark.parametrize("extra,message", [
    (["--modality", "image"], "--modality applies to --policy flow only"),
    (["--parameterization", "epsilon"], "--parameterization applies to --policy dp3 only"),
])
def test_cli_rejects_inapplicable_options(tmp_path: Path, capsys, extra, message) -> None:
    code = gpc_ros_main(["train", "--policy", "diffusion", "--dataset", str(tmp_path), "--output", str(tmp_path),
                         *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_without_dataset_says_what_to_do(tmp_path: Path, capsys) -> None:
    code = gpc_ros_main(["train", "--policy", "dp3", "--dataset", str(tmp_path / "none"), "--output", str(tmp_path)])
    assert code == 2 and "pass --synthetic N" in capsys.readouterr().err
