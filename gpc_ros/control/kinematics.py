"""FR3 kinematics from the URDF with pinocchio: forward kinematics, Jacobian, damped-least-squares IK, limits.

The model is built from a URDF path (default: this package's ``urdf/fr3.urdf``, else the FR3 that franky-sim ships,
``franky_sim.urdf.URDF_PATH``; franka_description-style ``fr3_``-prefixed names and finger joints work too).
Conventions (docs/driver.md,
"Kinematics"):

- base frame ``fr3_link0``; joint vectors are fr3_joint1..7 in rad (any finger joints in the URDF are locked at 0);
- the TCP is ``fr3_hand_tcp``: taken from the URDF when it has that frame, else built as franky/libfranka's default
  Franka Hand end effector, flange (``link8``) then ``F_T_EE`` = rotation of -45 degrees about z and 0.1034 m
  along z. It matches ``franky.Robot.state.O_T_EE`` (tested against franky-sim over random configurations);
- poses are (position (3,) in m, quaternion (4,) x, y, z, w) in ``fr3_link0``;
- the Jacobian is (6, 7), rows vx, vy, vz, wx, wy, wz of the TCP in ``fr3_link0`` axes (pinocchio's
  ``LOCAL_WORLD_ALIGNED``);
- *check points* are the origins of links that must stay in the workspace besides the TCP: ``elbow``
  (``fr3_link4``, the joint-4 axis) and ``wrist`` (``fr3_link6``, where joints 5-6 axes meet).

Nothing here talks to the robot or imports rclpy; one :class:`FR3Kinematics` instance is not thread-safe (it owns
a pinocchio ``Data``), make one per thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Names of the arm joints, in the order of every joint vector.
ARM_JOINT_NAMES: tuple[str, ...] = tuple(f"fr3_joint{i}" for i in range(1, 8))
#: Franka Hand TCP relative to the flange (libfranka's default F_T_EE): rotation about z (rad), offset along z (m).
HAND_TCP_ROTATION_Z_RAD = -np.pi / 4
HAND_TCP_OFFSET_Z_M = 0.1034
#: Points of the arm (besides the TCP) checked against the workspace: name -> link whose origin it is.
CHECK_POINT_LINKS: dict[str, str] = {"elbow": "fr3_link4", "wrist": "fr3_link6"}
#: Links reported by :meth:`FR3Kinematics.link_poses` (e.g. for markers).
LINK_NAMES: tuple[str, ...] = tuple(f"fr3_link{i}" for i in range(9)) + ("fr3_hand_tcp",)


def default_urdf_path() -> Path:
    """Path of the FR3 URDF used for kinematics.

    This package's ``urdf/fr3.urdf`` when installed with it, else the one franky-sim ships
    (``franky_sim.urdf.URDF_PATH``); both give the same kinematics (tested).
    """
    try:
        from gpc_ros.paths import share_dir

        own = share_dir() / "urdf" / "fr3.urdf"
        if own.is_file():
            return own
    except (ImportError, OSError, RuntimeError):
        pass
    from franky_sim.urdf import URDF_PATH

    return Path(URDF_PATH)


@dataclass(frozen=True)
class IKResult:
    """Outcome of :meth:`FR3Kinematics.inverse`."""

    joint_positions_rad: np.ndarray
    """(7,) best joint vector found, always inside the model's joint limits (or the limits given)."""
    position_error_m: float
    """Distance between the TCP at the result and the target position (m)."""
    rotation_error_rad: float
    """Angle between the TCP orientation at the result and the target orientation (rad)."""
    converged: bool
    """Both errors are within the tolerances asked for."""
    iterations: int


def _quat_xyzw_from_rotation(rotation: np.ndarray) -> np.ndarray:
    import pinocchio as pin

    q = pin.Quaternion(rotation).coeffs()  # x, y, z, w
    return np.array(q, dtype=np.float64)


def _rotation_from_quat_xyzw(quaternion_xyzw: np.ndarray) -> np.ndarray:
    import pinocchio as pin

    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"a quaternion must be 4 finite numbers x, y, z, w with a non-zero norm, "
                         f"got {quaternion_xyzw!r}")
    q = q / norm
    return pin.Quaternion(q[3], q[0], q[1], q[2]).toRotationMatrix()


class FR3Kinematics:
    """The FR3 arm model: FK of the TCP and check points, Jacobian, DLS inverse kinematics, joint limits."""

    def __init__(self, urdf_path: str | Path | None = None) -> None:
        import pinocchio as pin

        path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
        if not path.is_file():
            raise FileNotFoundError(f"FR3 URDF not found: {path} (pass urdf_path=<file> or install franky-sim)")
        full = pin.buildModelFromUrdf(str(path))
        self.urdf_path = path
        arm_ids, lock_ids = [], []
        for jid in range(1, full.njoints):
            name = full.names[jid]
            short = name[4:] if name.startswith("fr3_") else name
            if short in {f"joint{i}" for i in range(1, 8)}:
                arm_ids.append((int(short[5:]), jid))
            else:
                lock_ids.append(jid)
        if len(arm_ids) != 7:
            raise ValueError(f"URDF {path} must have revolute joints joint1..7 (optionally fr3_-prefixed), found "
                             f"{[full.names[j] for j in range(1, full.njoints)]}")
        model = pin.buildReducedModel(full, lock_ids, pin.neutral(full)) if lock_ids else full
        self._pin = pin
        self.model = model
        self.data = model.createData()
        if model.nq != 7:
            raise ValueError(f"URDF {path}: expected 7 arm joints after locking the others, got nq={model.nq}")
        self._frame_ids = {name: self._find_frame(name) for name in LINK_NAMES if name != "fr3_hand_tcp"}
        missing = [n for n, fid in self._frame_ids.items() if fid is None]
        if missing:
            raise ValueError(f"URDF {path} lacks the links {missing} (named with or without the fr3_ prefix)")
        tcp = self._find_frame("fr3_hand_tcp")
        if tcp is None:
            flange = model.frames[self._frame_ids["fr3_link8"]]
            offset = pin.SE3(pin.utils.rpyToMatrix(0.0, 0.0, HAND_TCP_ROTATION_Z_RAD),
                             np.array([0.0, 0.0, HAND_TCP_OFFSET_Z_M]))
            tcp = model.addFrame(pin.Frame("fr3_hand_tcp", flange.parentJoint, flange.parentFrame,
                                           flange.placement * offset, pin.FrameType.OP_FRAME))
            self.data = model.createData()
        self._frame_ids["fr3_hand_tcp"] = tcp
        self._tcp_id = tcp
        self.lower_rad = np.array(model.lowerPositionLimit, dtype=np.float64)
        """(7,) joint position lower limits from the URDF (rad)."""
        self.upper_rad = np.array(model.upperPositionLimit, dtype=np.float64)
        """(7,) joint position upper limits from the URDF (rad)."""
        self.velocity_limit_rad_s = np.array(model.velocityLimit, dtype=np.float64)
        """(7,) joint speed limits from the URDF (rad/s)."""

    def _find_frame(self, name: str) -> int | None:
        short = name[4:] if name.startswith("fr3_") else name
        for candidate in (name, short):
            if self.model.existFrame(candidate):
                return int(self.model.getFrameId(candidate))
        return None

    # -- forward kinematics ----------------------------------------------------------------------------------------
    def _update(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint positions must be 7 finite numbers (rad), got {q!r}")
        self._pin.framesForwardKinematics(self.model, self.data, q)

    def forward(self, joint_positions_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP pose at ``joint_positions_rad`` (7,): (position (3,) m, quaternion (4,) x, y, z, w) in fr3_link0."""
        self._update(joint_positions_rad)
        m = self.data.oMf[self._tcp_id]
        return np.array(m.translation), _quat_xyzw_from_rotation(m.rotation)

    def check_points(self, joint_positions_rad: np.ndarray) -> dict[str, np.ndarray]:
        """Positions (3,) in fr3_link0 (m) of the TCP (key ``tcp``) and of every check point (``elbow``, ``wrist``)."""
        self._update(joint_positions_rad)
        out = {"tcp": np.array(self.data.oMf[self._tcp_id].translation)}
        for name, link in CHECK_POINT_LINKS.items():
            out[name] = np.array(self.data.oMf[self._frame_ids[link]].translation)
        return out

    def link_poses(self, joint_positions_rad: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Pose (position m, quaternion x, y, z, w) in fr3_link0 of every link in :data:`LINK_NAMES`."""
        self._update(joint_positions_rad)
        out = {}
        for name, fid in self._frame_ids.items():
            m = self.data.oMf[fid]
            out[name] = (np.array(m.translation), _quat_xyzw_from_rotation(m.rotation))
        return out

    def jacobian(self, joint_positions_rad: np.ndarray) -> np.ndarray:
        """(6, 7) TCP Jacobian: linear then angular velocity in fr3_link0 axes per joint speed."""
        pin = self._pin
        q = np.asarray(joint_positions_rad, dtype=np.float64)
        self._update(q)
        return np.array(pin.computeFrameJacobian(self.model, self.data, q, self._tcp_id,
                                                  pin.ReferenceFrame.LOCAL_WORLD_ALIGNED))

    def manipulability(self, joint_positions_rad: np.ndarray) -> float:
        """Yoshikawa's measure sqrt(det(J J^T)) of the (6, 7) TCP Jacobian (0 at a singularity)."""
        j = self.jacobian(joint_positions_rad)
        return float(np.sqrt(max(0.0, np.linalg.det(j @ j.T))))

    # -- inverse kinematics ----------------------------------------------------------------------------------------
    def inverse(self, position_m: np.ndarray, quaternion_xyzw: np.ndarray, seed_rad: np.ndarray, *,
                lower_rad: np.ndarray | None = None, upper_rad: np.ndarray | None = None,
                max_iterations: int = 50, position_tolerance_m: float = 1e-4,
                rotation_tolerance_rad: float = 1e-3, damping: float = 0.05,
                rotation_weight_m: float = 0.2, max_step_rad: float = 0.3) -> IKResult:
        """Joint positions that put the TCP at the target pose, starting from ``seed_rad`` (7,).

        Damped least squares on the weighted 6-D error (position in m; rotation in rad times ``rotation_weight_m``,
        so 1 rad counts like 0.2 m): ``dq = J^T (J J^T + l^2 I)^-1 e`` with ``l = min(damping, |e|)``, each step at
        most ``max_step_rad`` per
        joint and projected into [``lower_rad``, ``upper_rad``] (default: the model's limits). Near a singularity
        or for an unreachable target the damping keeps steps small and the result is the closest pose found
        (``converged`` False); never raises for an unreachable target. Raises ValueError for non-finite input.
        """
        pin = self._pin
        p_target = np.asarray(position_m, dtype=np.float64)
        if p_target.shape != (3,) or not np.all(np.isfinite(p_target)):
            raise ValueError(f"an IK target position must be 3 finite numbers (m), got {position_m!r}")
        r_target = _rotation_from_quat_xyzw(quaternion_xyzw)
        lo = self.lower_rad if lower_rad is None else np.asarray(lower_rad, dtype=np.float64)
        hi = self.upper_rad if upper_rad is None else np.asarray(upper_rad, dtype=np.float64)
        q = np.clip(np.asarray(seed_rad, dtype=np.float64), lo, hi)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"an IK seed must be 7 finite joint positions (rad), got {seed_rad!r}")
        weights = np.array([1.0, 1.0, 1.0, rotation_weight_m, rotation_weight_m, rotation_weight_m])
        best = (np.inf, q.copy(), np.inf, np.inf)
        it = 0
        for it in range(1, max_iterations + 1):
            self._update(q)
            m = self.data.oMf[self._tcp_id]
            e_pos = p_target - m.translation
            e_rot = m.rotation @ pin.log3(m.rotation.T @ r_target)  # rotation error in base axes
            pos_err, rot_err = float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot))
            cost = pos_err + rotation_weight_m * rot_err
            if cost < best[0]:
                best = (cost, q.copy(), pos_err, rot_err)
            if pos_err <= position_tolerance_m and rot_err <= rotation_tolerance_rad:
                return IKResult(q, pos_err, rot_err, True, it)
            j = np.array(pin.computeFrameJacobian(self.model, self.data, q, self._tcp_id,
                                                  pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)) * weights[:, None]
            e = np.concatenate([e_pos, e_rot]) * weights
            lam = min(damping, float(np.linalg.norm(e)))  # full damping far away, Gauss-Newton close to the target
            dq = j.T @ np.linalg.solve(j @ j.T + lam ** 2 * np.eye(6), e)
            largest = float(np.abs(dq).max())
            if largest > max_step_rad:
                dq *= max_step_rad / largest
            q_next = np.clip(q + dq, lo, hi)
            if np.abs(q_next - q).max() < 1e-10:  # stuck against limits or at the closest reachable pose
                break
            q = q_next
        _, q_best, pos_err, rot_err = best
        return IKResult(q_best, pos_err, rot_err,
                        pos_err <= position_tolerance_m and rot_err <= rotation_tolerance_rad, it)
