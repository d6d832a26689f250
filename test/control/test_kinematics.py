"""FR3 kinematics (pinocchio): FK against what franky-sim reports, Jacobian vs finite differences, IK."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpc_ros.control.kinematics import CHECK_POINT_LINKS, LINK_NAMES, FR3Kinematics

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kin() -> FR3Kinematics:
    return FR3Kinematics()


def random_configurations(kin: FR3Kinematics, n: int, seed: int = 0, shrink: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(kin.lower_rad + shrink, kin.upper_rad - shrink, size=(n, 7))


def quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.arccos(min(1.0, abs(float(np.dot(a, b))))))


def test_fk_matches_the_end_effector_pose_franky_sim_reports(kin, franky_sim_fast):
    """Random joint targets on franky-sim, compared with the O_T_EE franky reports.

    franky-sim computes O_T_EE from the *commanded* joints ``q_d`` (measured while writing this test: during a
    1 rad/s motion FK(q) was up to 81 mm from O_T_EE, FK(q_d) within 1e-6 m), a real FR3 from the measured ``q``.
    So every state read during the motion compares FK(q_d), and at rest FK(q) is compared as well.
    """
    import franky

    robot = franky.Robot(franky_sim_fast.host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = franky.RelativeDynamicsFactor(0.5, 0.5, 0.5)
    targets = random_configurations(kin, 5, seed=1, shrink=0.4)
    targets[:, 1] = np.clip(targets[:, 1], -0.6, 0.6)  # keep the arm off the floor (the sim has one)
    targets[:, 3] = np.clip(targets[:, 3], -2.6, -0.8)
    moving, at_rest = [], []
    for target in targets:
        robot.move(franky.JointWaypointMotion([franky.JointWaypoint(target.tolist())]), asynchronous=True)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            state = robot.state
            p, q = kin.forward(np.array(state.q_d))
            moving.append((np.array(state.q_d), p, q, np.array(state.O_T_EE.translation),
                           np.array(state.O_T_EE.quaternion)))
            if robot.join_motion(timeout=0.0) and np.abs(np.array(state.q) - np.array(state.q_d)).max() < 2e-3:
                p, q = kin.forward(np.array(state.q))
                at_rest.append((np.array(state.q), p, q, np.array(state.O_T_EE.translation),
                                np.array(state.O_T_EE.quaternion)))
                break
            time.sleep(0.02)
    assert len(at_rest) == len(targets) and len(moving) > 50
    joints = np.array([c[0] for c in moving])
    assert np.ptp(joints, axis=0).min() > 0.3, "the arm did not visit varied configurations"
    for rows, pos_tol, rot_tol in ((moving, 1e-5, 1e-4), (at_rest, 3e-3, 1e-2)):
        pos_err = max(np.linalg.norm(c[1] - c[3]) for c in rows)
        rot_err = max(quat_angle(c[2], c[4]) for c in rows)
        assert pos_err < pos_tol and rot_err < rot_tol, (pos_err, rot_err)


def test_jacobian_matches_finite_differences_of_fk(kin):
    for q in random_configurations(kin, 5, seed=2):
        j = kin.jacobian(q)
        p0, q0 = kin.forward(q)
        eps = 1e-6
        for i in range(7):
            dq = np.zeros(7)
            dq[i] = eps
            p1, _ = kin.forward(q + dq)
            np.testing.assert_allclose((p1 - p0) / eps, j[:3, i], atol=1e-5)


def test_ik_round_trips_random_reachable_poses_from_a_nearby_seed(kin):
    rng = np.random.default_rng(3)
    for q_true in random_configurations(kin, 30, seed=3, shrink=0.3):
        p, quat = kin.forward(q_true)
        seed = q_true + rng.uniform(-0.2, 0.2, 7)
        res = kin.inverse(p, quat, seed)
        assert res.converged, (res.position_error_m, res.rotation_error_rad)
        p2, quat2 = kin.forward(res.joint_positions_rad)
        assert np.linalg.norm(p2 - p) < 2e-4 and quat_angle(quat2, quat) < 2e-3
        assert np.all(res.joint_positions_rad >= kin.lower_rad) and np.all(res.joint_positions_rad <= kin.upper_rad)


def test_ik_of_an_unreachable_target_stays_in_limits_and_says_so(kin):
    seed = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
    _, quat = kin.forward(seed)
    res = kin.inverse(np.array([1.5, 0.0, 0.3]), quat, seed)  # 1.5 m away: beyond the FR3's reach (~0.86 m)
    assert not res.converged and res.position_error_m > 0.4
    assert np.all(res.joint_positions_rad >= kin.lower_rad) and np.all(res.joint_positions_rad <= kin.upper_rad)
    lo, hi = kin.lower_rad + 0.5, kin.upper_rad - 0.5  # tighter limits are honoured as well
    res = kin.inverse(np.array([0.3, 0.5, 0.2]), quat, seed, lower_rad=lo, upper_rad=hi)
    assert np.all(res.joint_positions_rad >= lo - 1e-12) and np.all(res.joint_positions_rad <= hi + 1e-12)


def test_limits_points_and_links_come_from_the_model(kin):
    assert kin.lower_rad.shape == kin.upper_rad.shape == kin.velocity_limit_rad_s.shape == (7,)
    assert np.all(kin.lower_rad < kin.upper_rad) and np.all(kin.velocity_limit_rad_s > 0)
    assert kin.upper_rad[3] < 0.0  # joint 4 never straightens on an FR3
    q = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
    points = kin.check_points(q)
    assert set(points) == {"tcp", *CHECK_POINT_LINKS}
    links = kin.link_poses(q)
    assert set(links) == set(LINK_NAMES)
    np.testing.assert_allclose(links["fr3_link0"][0], 0.0, atol=1e-12)
    np.testing.assert_allclose(links["fr3_hand_tcp"][0], kin.forward(q)[0])
    assert kin.manipulability(q) > 0.01
    with pytest.raises(ValueError, match="7 finite"):
        kin.forward(np.full(7, np.nan))
    with pytest.raises(FileNotFoundError, match="URDF"):
        FR3Kinematics("/no/such/fr3.urdf")


def test_the_package_urdf_and_franky_sims_give_the_same_kinematics(kin):
    from pathlib import Path

    from franky_sim.urdf import URDF_PATH

    own = FR3Kinematics(Path(__file__).resolve().parents[2] / "urdf" / "fr3.urdf")
    sim = FR3Kinematics(URDF_PATH)
    for q in random_configurations(kin, 10, seed=5):
        for name, (p, quat) in own.link_poses(q).items():
            p2, quat2 = sim.link_poses(q)[name]
            assert np.linalg.norm(p - p2) < 1e-9 and quat_angle(quat, quat2) < 1e-6, name  # arccos near 1: ~1e-8
    np.testing.assert_allclose(own.lower_rad, sim.lower_rad)
    np.testing.assert_allclose(own.upper_rad, sim.upper_rad)
