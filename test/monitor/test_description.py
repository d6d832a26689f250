"""urdf/fr3.urdf: names as the driver publishes them, meshes that resolve, and forward kinematics from this file
(gpc_ros.control.kinematics) against the end-effector pose franky reports from franky-sim."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from gpc_ros.monitor.description import (
    VISUAL_LINKS,
    LinkPoser,
    mesh_path,
    resolve_mesh_source,
    robot_description,
    urdf_path,
)
from gpc_ros.nodes.conversions import ARM_JOINT_NAMES, BASE_FRAME, FINGER_JOINT_NAMES, TCP_FRAME


def test_urdf_names_match_the_driver_and_keeps_the_notice():
    root = ET.parse(urdf_path()).getroot()
    joints = {j.get("name"): j.get("type") for j in root.iter("joint")}
    links = {link.get("name") for link in root.iter("link")}
    assert all(joints[n] == "revolute" for n in ARM_JOINT_NAMES)
    assert all(joints[n] == "prismatic" for n in FINGER_JOINT_NAMES)
    assert {BASE_FRAME, TCP_FRAME} <= links and set(VISUAL_LINKS) <= links
    meshes = [m.get("filename") for m in root.iter("mesh")]
    assert meshes and all(m.startswith("package://franka_description/meshes/") for m in meshes)
    notice = (urdf_path().parent / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "Franka Robotics GmbH" in notice


@pytest.mark.parametrize("source", ["franky_sim", "franka_description", "none"])
def test_every_mesh_source_gives_a_loadable_description(source):
    import pinocchio as pin

    text = robot_description(source)
    model = pin.buildModelFromXML(text)
    assert [model.names[i] for i in range(1, 8)] == list(ARM_JOINT_NAMES)
    uris = re.findall(r'filename="([^"]+)"', text)
    if source == "franky_sim":
        assert len(uris) == 20 and all(u.startswith("file://") for u in uris)
        assert all(Path(unquote(urlparse(u).path)).is_file() for u in uris)
    elif source == "franka_description":
        assert all(mesh_path(u) is not None for u in uris), "package:// meshes must resolve (franky-sim's copies)"
    else:
        assert uris == []
    # without franka_description in the ament index, auto falls back to franky-sim's meshes
    assert resolve_mesh_source("auto") in ("franka_description", "franky_sim")


def test_link_poses_place_the_fingers_at_the_gripper_width():
    poser = LinkPoser()
    q = np.array([0.1, -0.5, 0.2, -2.0, 0.1, 1.6, 0.7])
    for width in (0.0, 0.03, 0.08):
        poses = poser.poses(q, width)
        gap = np.linalg.norm(poses["fr3_leftfinger"][0] - poses["fr3_rightfinger"][0])
        assert gap == pytest.approx(width, abs=1e-9)
    tcp, quat = poser.kinematics.forward(q)
    np.testing.assert_allclose(poses["fr3_hand_tcp"][0], tcp, atol=1e-12)
    # the TCP is 0.1034 m beyond the hand along the hand's z axis
    assert np.linalg.norm(poses["fr3_hand_tcp"][0] - poses["fr3_hand"][0]) == pytest.approx(0.1034, abs=1e-9)


def test_fk_from_our_urdf_equals_fk_from_franky_sims_urdf():
    """Fast check in the default run: the TCP and every arm link of urdf/fr3.urdf coincide with the model built from
    franky-sim's URDF (which test/control/test_kinematics.py checks against franky-sim's O_T_EE) over 200 random
    configurations."""
    from gpc_ros.control.kinematics import FR3Kinematics

    ours, theirs = LinkPoser().kinematics, FR3Kinematics()
    rng = np.random.default_rng(7)
    for q in rng.uniform(ours.lower_rad, ours.upper_rad, size=(200, 7)):
        a, b = ours.link_poses(q), theirs.link_poses(q)
        for name in b:
            np.testing.assert_allclose(a[name][0], b[name][0], atol=1e-9, err_msg=name)
            assert abs(float(np.dot(a[name][1], b[name][1]))) == pytest.approx(1.0, abs=1e-9), name


@pytest.mark.slow
def test_fk_from_our_urdf_matches_franky_sim(franky_sim_fast):
    """FK of urdf/fr3.urdf vs the O_T_EE franky reports while the simulated arm visits random configurations.

    franky-sim computes O_T_EE from the commanded joints q_d (measured by the kinematics developer, see
    test/control/test_kinematics.py), so every state read compares FK(q_d).
    """
    import franky

    kin = LinkPoser().kinematics
    robot = franky.Robot(franky_sim_fast.host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = franky.RelativeDynamicsFactor(0.5, 0.5, 0.5)
    rng = np.random.default_rng(14)
    targets = rng.uniform(kin.lower_rad + 0.4, kin.upper_rad - 0.4, size=(2, 7))
    targets[:, 1] = np.clip(targets[:, 1], -0.6, 0.6)  # keep the arm off the sim's floor
    targets[:, 3] = np.clip(targets[:, 3], -2.6, -0.8)
    samples = []
    for target in targets:
        robot.move(franky.JointWaypointMotion([franky.JointWaypoint(target.tolist())]), asynchronous=True)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            state = robot.state
            samples.append((np.array(state.q_d), np.array(state.O_T_EE.translation),
                            np.array(state.O_T_EE.quaternion)))
            if robot.join_motion(timeout=0.0):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"franky-sim did not reach {target} within 30 s")
    joints = np.array([s[0] for s in samples])
    assert len(samples) > 30 and np.ptp(joints, axis=0).min() > 0.3, "the arm did not visit varied configurations"
    errors = []
    for q, p_ref, q_ref in samples:
        p, quat = kin.forward(q)
        errors.append((np.linalg.norm(p - p_ref), 2 * np.arccos(min(1.0, abs(float(np.dot(quat, q_ref)))))))
    pos_err, rot_err = np.max(errors, axis=0)
    assert pos_err < 1e-5 and rot_err < 1e-4, (pos_err, rot_err)
