"""The served cell through the real path: reset puts arm and cubes back; the scripted expert solves push_red."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.sim.cell import CellConfig, ExpertPolicy, SimCell
from gpc_ros.sim.cell_control import CellControlError
from gpc_ros.sim.tasks import ObjectPose


@pytest.fixture(scope="module")
def cell():
    # state only: these tests are about physics and the driver; the cameras have their own tests
    with SimCell(CellConfig(render=False)) as c:
        yield c


def _poses(objects: dict) -> dict[str, np.ndarray]:
    return {n: np.array(o["position_m"] + o["quaternion_wxyz"]) for n, o in objects.items()}


def _expected(cell: SimCell, seed: int) -> dict[str, np.ndarray]:
    return {n: np.array(list(p.position_m) + list(p.quaternion_wxyz)) for n, p in cell.task.sample_layout(seed).items()}


@pytest.mark.timeout(1800)  # 5 episodes took 4.3 min at load ~15 (2 cores)
def test_expert_solves_five_seeded_episodes_and_reset_restores_everything(cell):
    policy = ExpertPolicy(cell.task)
    results = [cell.run_episode(policy, seed, record=True) for seed in range(1000, 1005)]
    wins = sum(r.outcome.success for r in results)
    # the 50-episode test asks for >= 90 %; 4 of 5 keeps this one from flaking at that rate
    assert wins >= 4, [(r.seed, r.outcome.reason) for r in results]
    for r in results:
        assert r.frames["action"].shape == (r.steps, 10) and r.frames["observation.state"].shape == (r.steps, 10)
        # the arm followed the expert's targets through franky (commanded at step t, measured at t + 1): 0.5-0.8 mm
        # median in the recorded demonstrations
        err = np.linalg.norm(r.frames["action"][:-1, :3] - r.frames["observation.state"][1:, :3], axis=1)
        assert np.median(err) < 0.010
    moved = cell.client.objects()["objects"]
    # the cubes and the arm have moved: a reset puts every one back, without restarting the server
    seed = 1003
    after = _poses(cell.client.reset(seed))
    expected = _expected(cell, seed)
    for name in expected:
        assert not np.allclose(np.array(moved[name]["position_m"]), expected[name][:3], atol=1e-3)
        np.testing.assert_allclose(after[name], expected[name], atol=1e-9)
    cell.wait_until(cell.now_s() + 0.5)  # settled on the table half a second later: still where they were put
    settled = _poses(cell.client.objects()["objects"])
    for name in expected:
        np.testing.assert_allclose(settled[name][:3], expected[name][:3], atol=1e-3)
    q = cell._reader.snapshot().qpos
    arm = cell.executor.state.joint_positions_rad
    np.testing.assert_allclose(arm, cell.task.home_joint_positions_rad, atol=0.01)
    assert q.shape == (cell._reader.nq,)


def test_set_objects_and_bad_requests(cell):
    pose = ObjectPose((0.55, 0.2, 0.025), 0.3)
    objects = cell.client.set_objects({"target": pose})
    np.testing.assert_allclose(objects["target"]["position_m"], pose.position_m)
    with pytest.raises(CellControlError, match="unknown objects \\['banana'\\]"):
        cell.client.set_objects({"banana": pose})
    with pytest.raises(CellControlError, match="seed must be an integer"):
        cell.client.request("reset", seed="three")
    with pytest.raises(CellControlError, match="unknown op 'fly'"):
        cell.client.request("fly")
    assert cell.client.request("task")["task"] == "push_red"


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_expert_succeeds_in_at_least_90_percent_of_50_seeded_episodes(cell):
    policy = ExpertPolicy(cell.task)
    results = [cell.run_episode(policy, seed, record=False) for seed in range(2000, 2050)]
    wins = sum(r.outcome.success for r in results)
    assert wins >= 45, [(r.seed, r.outcome.reason) for r in results if not r.outcome.success]
