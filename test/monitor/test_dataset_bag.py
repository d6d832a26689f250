"""Demonstration episodes -> bags for `gpc-ros replay` (gpc_ros.nodes.dataset_bag).

A small dataset in the push_red layout (random but valid: unit rotations, 96x96 images, 512-point clouds) is
written with the package's dataset writer, converted, and read back with the replay's own reader; the observation
windows the replay builds are compared with the benchmark's (ComposedPolicy.window on the dataset frames), and the
replayed error with the error of the chunk the benchmark's composer samples from those frames for the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpc_ros.action_space import rotation_6d_from_quaternion
from gpc_ros.monitor.bag import BagError
from gpc_ros.monitor.replay_io import load_recording
from gpc_ros.nodes.dataset_bag import DemoBagConfig, dataset_to_bags, demo_chunks, episode_to_bag, parse_episodes

LENGTHS = (13, 9)


def make_episode(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    state = np.concatenate([rng.uniform(0.2, 0.6, (n, 3)), rotation_6d_from_quaternion(q),
                            rng.uniform(0, 0.08, (n, 1))], axis=1).astype(np.float32)
    qa = rng.normal(size=(n, 4))
    qa /= np.linalg.norm(qa, axis=1, keepdims=True)
    action = np.concatenate([rng.uniform(0.2, 0.6, (n, 3)), rotation_6d_from_quaternion(qa),
                             rng.uniform(0, 0.08, (n, 1))], axis=1).astype(np.float32)
    return {"observation.state": state, "action": action,
            "observation.image": rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8),
            "observation.image_wrist": rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8),
            "observation.pointcloud": rng.uniform(-0.3, 0.7, (n, 512, 3)).astype(np.float32)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from gpc_ros.policies.dataset import write_episodes

    rng = np.random.default_rng(3)
    episodes = [make_episode(rng, n) for n in LENGTHS]
    path = write_episodes(tmp_path_factory.mktemp("demo") / "ds", episodes, fps=10.0)
    return path, episodes


def test_round_trip_through_the_replay_reader(dataset, tmp_path):
    path, episodes = dataset
    config = DemoBagConfig(horizon=16, chunk_every=4)
    bags = dataset_to_bags(path, tmp_path / "bags", [0, 1], config)
    assert [b.name for b in bags] == ["episode_000000", "episode_000001"]
    for bag, ep in zip(bags, episodes):
        n = len(ep["action"])
        rec = load_recording(bag, {"image", "points", "state"})
        times = 100.0 + 0.1 * np.arange(n)
        for name in ("image", "points", "state"):
            np.testing.assert_allclose(rec.streams[name].times_s, times, atol=1e-9)
        np.testing.assert_array_equal(np.stack(rec.streams["image"].frames), ep["observation.image"])
        np.testing.assert_array_equal(np.stack(rec.streams["points"].frames), ep["observation.pointcloud"])
        state = np.stack(rec.streams["state"].frames)
        np.testing.assert_array_equal(state[:, :3].astype(np.float32), ep["observation.state"][:, :3])
        np.testing.assert_allclose(state[:, 3:9], ep["observation.state"][:, 3:9], atol=1e-6)  # via a quaternion
        np.testing.assert_array_equal(state[:, 9].astype(np.float32), ep["observation.state"][:, 9])
        decisions = list(range(0, n, 4))
        assert len(rec.chunks) == len(decisions)
        for chunk, k in zip(rec.chunks, decisions):
            assert chunk.start_time_s == pytest.approx(times[k] + 0.1, abs=1e-9)  # first action one period later
            assert chunk.dt_s == pytest.approx(0.1)
            rows = np.minimum(np.arange(k, k + 16), n - 1)  # the last action repeated past the end
            np.testing.assert_allclose(chunk.positions_m, ep["action"][rows, :3], atol=1e-7)
            np.testing.assert_allclose(chunk.gripper_width_m, np.clip(ep["action"][rows, 9], 0, 0.08), atol=1e-7)


def test_a_coloured_cloud_round_trips_with_its_colour(tmp_path):
    """The cell's clouds are (512, 6): xyz m, then rgb in [0, 1] (k / 255). The bag carries the colour as the packed
    rgb field, and the replay reader gives back the same (512, 6) frames."""
    from gpc_ros.policies.dataset import write_episodes

    rng = np.random.default_rng(5)
    episode = make_episode(rng, 5)
    colours = rng.integers(0, 256, (5, 512, 3)).astype(np.float32) / np.float32(255.0)
    episode["observation.pointcloud"] = np.concatenate([episode["observation.pointcloud"], colours], -1)
    path = write_episodes(tmp_path / "ds", [episode], fps=10.0)
    (bag,) = dataset_to_bags(path, tmp_path / "bags", [0], DemoBagConfig(horizon=16, chunk_every=4))
    rec = load_recording(bag, {"points"})
    frames = np.stack(rec.streams["points"].frames)
    assert frames.shape == (5, 512, 6)
    np.testing.assert_array_equal(frames[..., :3], episode["observation.pointcloud"][..., :3])
    np.testing.assert_allclose(frames[..., 3:], colours, atol=1e-6)


def test_replay_equals_the_benchmarks_composed_policy_on_the_same_frames(dataset, tmp_path):
    """The shipped push_red parents: the replay's observation windows equal the benchmark's, and its per-chunk
    error equals that of the chunk the benchmark's composer samples from the dataset frames for the same seed."""
    from gpc_ros.benchmark.episode import ComposedPolicy
    from gpc_ros.compose import Composer, ComposerConfig
    from gpc_ros.monitor.replay import ReplayConfig, ReplayParent, replay, rmse_m
    from gpc_ros.policies import load_policy
    from gpc_ros.policies.evaluation import default_sampler
    from gpc_ros.policies.registry import resolve_checkpoint

    path, episodes = dataset
    ep = episodes[0]
    bag = episode_to_bag(path, 0, tmp_path / "ep0", DemoBagConfig(chunk_every=8))
    rec = load_recording(bag, {"image", "points", "state"})
    folders = [resolve_checkpoint("push_red_diffusion_rgb"), resolve_checkpoint("push_red_dp3_pcd")]
    policies = [load_policy(f) for f in folders]
    parents = [ReplayParent.from_checkpoint("rgb", folders[0]), ReplayParent.from_checkpoint("pcd", folders[1])]
    sampler = default_sampler(policies, 2)
    w = [0.5, 0.5]
    report = replay(rec, parents, np.array([w]), ReplayConfig(dt_s=None, seed=7, sampler=sampler))
    assert report["error_source"] == "recorded_chunks" and report["chunks"] == 2  # decisions at frames 0 and 8

    composer = Composer([p.as_parent(n) for p, n in zip(policies, ("rgb", "pcd"))],
                        ComposerConfig(operator="convex", sampler=sampler, return_parent_chunks=False))
    bench = ComposedPolicy(composer, policies, w, replan_every=8)
    frames = [{k: ep[k][i] for k in ep} for i in range(len(ep["action"]))]
    expected = []
    for i, k in enumerate((0, 8)):
        bench.history = frames[:k + 1]
        windows = [bench.window(p) for p in policies]
        for rp, p, win in zip(parents, policies, windows):
            obs = rp.observe(rec, 100.0 + 0.1 * k)
            assert set(obs) == set(win)
            for key in win:
                if key == "observation.state":
                    np.testing.assert_allclose(obs[key], win[key], atol=1e-6)
                else:
                    np.testing.assert_array_equal(obs[key], win[key])
        with torch.no_grad():
            out = composer.compose(composer.encode(windows), w, generator=7 + i)
        chunk = out.actions[0, 0].to(torch.float64).numpy()
        rows = np.minimum(np.arange(k, k + 16), len(frames) - 1)
        expected.append(rmse_m(chunk[:, :3], ep["action"][rows, :3].astype(np.float64)))
    composer.close()
    np.testing.assert_allclose(report["results"][0]["per_chunk"]["error_m"], expected, rtol=1e-4, atol=1e-6)


def test_bad_input_names_the_problem(dataset, tmp_path):
    path, _ = dataset
    with pytest.raises(ValueError, match="episode must be in 0..1"):
        episode_to_bag(path, 5, tmp_path / "x")
    with pytest.raises(ValueError, match="not a gpc_ros episode dataset"):
        episode_to_bag(tmp_path, 0, tmp_path / "x")
    with pytest.raises(ValueError, match="has no"):
        episode_to_bag(path, 0, tmp_path / "x", DemoBagConfig(image_key="observation.depth"))
    episode_to_bag(path, 0, tmp_path / "y")
    with pytest.raises(BagError, match="exists already"):
        episode_to_bag(path, 0, tmp_path / "y")
    with pytest.raises(ValueError, match="DemoBagConfig.chunk_every"):
        DemoBagConfig(chunk_every=0)


def test_episode_selection_and_demo_chunks():
    assert parse_episodes("180:200", 200) == list(range(180, 200))
    assert parse_episodes("3,5", 10) == [3, 5]
    with pytest.raises(ValueError, match="outside 0..199"):
        parse_episodes("190:201", 200)
    with pytest.raises(ValueError, match="--episodes takes"):
        parse_episodes("a:b", 200)
    actions = np.arange(5)[:, None] * np.ones((1, 2))
    chunks = demo_chunks(actions, 3, 2)
    assert [k for k, _ in chunks] == [0, 2, 4]
    np.testing.assert_array_equal(chunks[2][1][:, 0], [4, 4, 4])


def test_cli_to_bag(dataset, tmp_path, capsys):
    from gpc_ros.cli import main

    path, _ = dataset
    assert main(["dataset", "to-bag", str(path), str(tmp_path / "bags"), "--episodes", "1:2", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "bags").iterdir()) == ["episode_000001"]
    assert len(load_recording(tmp_path / "bags" / "episode_000001", {"image"}).chunks) == 2  # 9 frames, every 8
    assert main(["dataset", "to-bag", str(path), str(tmp_path / "bags"), "--episodes", "1"]) == 2
    assert "exists already" in capsys.readouterr().err
