"""The control channel into a served cell: reset (arm and objects back, no server restart), object poses, task.

The server process listens on a Unix socket (``gpc_ros_sim_<host>.sock`` beside the shared state, see
:func:`gpc_ros.sim.shared_state.cell_paths`); a client sends one JSON object per line and gets one JSON line back:

* ``{"op": "reset", "seed": S}``: the arm to the task's home configuration (at rest, fingers at the home width)
  and the objects to the layout of seed ``S``. Refused while a franky motion is running (stop the arm first).
* ``{"op": "set_objects", "poses": {name: {"position_m": [x, y, z], "yaw_rad": a}}}``: place objects (tests).
* ``{"op": "objects"}``: every object's position (m) and quaternion (w, x, y, z) in fr3_link0, and the time.
* ``{"op": "task"}``: the task name and configuration.

Changes are applied by the simulator thread between two physics steps (a post-step callback), never concurrently
with a step. Replies carry ``"ok": true`` or ``"ok": false, "error": "<one sentence>"``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np

from gpc_ros.sim.tasks import ObjectPose, PushTaskConfig

logger = logging.getLogger(__name__)


class CellControlError(RuntimeError):
    """The cell refused or could not carry out a control request (the message says why)."""


class _Request:
    def __init__(self, op: str, args: dict[str, Any]) -> None:
        self.op, self.args = op, args
        self.done = threading.Event()
        self.reply: dict[str, Any] = {}


class CellController:
    """Server side: owns the socket thread and applies requests inside the simulator loop."""

    def __init__(self, sim, server, task: PushTaskConfig, socket_path: Path) -> None:
        import mujoco

        self._mujoco = mujoco
        self.sim, self.task = sim, task
        self.robot_server = server.robot_servers[0]
        self.robot = sim.robots[0]
        m = sim.model
        self._obj_qpos: dict[str, int] = {}
        self._obj_dof: dict[str, int] = {}
        for name in task.object_names:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{name}_joint")
            self._obj_qpos[name] = int(m.jnt_qposadr[jid])
            self._obj_dof[name] = int(m.jnt_dofadr[jid])
        self._pending: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.socket_path = Path(socket_path)
        self.socket_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.socket_path))
        self._sock.listen(8)
        self._closing = threading.Event()
        sim.register_post_step_callback(self._apply_pending)
        self._thread = threading.Thread(target=self._accept_loop, name="cell-control", daemon=True)
        self._thread.start()

    # -- simulator thread -----------------------------------------------------------------------------------------
    def _apply_pending(self, _sim) -> None:
        while True:
            try:
                req = self._pending.get_nowait()
            except queue.Empty:
                return
            try:
                req.reply = {"ok": True, **self._apply(req)}
            except (CellControlError, ValueError, TypeError, KeyError) as exc:
                req.reply = {"ok": False, "error": str(exc)}
            req.done.set()

    def _apply(self, req: _Request) -> dict[str, Any]:
        if req.op == "reset":
            seed = req.args.get("seed")
            layout = self.task.sample_layout(seed)
            if self.robot_server.current_motion_id:
                raise CellControlError("the arm is executing a franky motion: stop it before resetting the cell")
            self._reset_arm()
            self._place(layout)
            return self._objects()
        if req.op == "set_objects":
            poses = {name: ObjectPose(tuple(float(v) for v in p["position_m"]), float(p.get("yaw_rad", 0.0)))
                     for name, p in req.args["poses"].items()}
            unknown = sorted(set(poses) - set(self._obj_qpos))
            if unknown:
                raise CellControlError(f"unknown objects {unknown}; the cell has {sorted(self._obj_qpos)}")
            self._place(poses)
            return self._objects()
        if req.op == "objects":
            return self._objects()
        raise CellControlError(f"unknown op {req.op!r}; known: reset, set_objects, objects, task")

    def _reset_arm(self) -> None:
        robot, d = self.robot, self.sim.data
        q_home = np.asarray(self.task.home_joint_positions_rad, dtype=np.float64)
        for addr, q in zip(robot._qpos_addrs, q_home):
            d.qpos[addr] = q
        for addr in robot._dof_addrs:
            d.qvel[addr] = 0.0
        half = self.task.home_gripper_width_m / 2.0
        for addr in robot._finger_qpos_addrs:
            d.qpos[addr] = half
        for addr in robot._finger_dof_addrs:
            d.qvel[addr] = 0.0
        robot.set_hand_goal(self.task.home_gripper_width_m, 0.05, 40.0)
        d.qfrc_applied[:] = 0.0
        d.qacc_warmstart[:] = 0.0
        # franky-sim's idle hold target (name-mangled private attribute of FrankaRobotServer): the new home
        self.robot_server._FrankaRobotServer__holding_q = tuple(float(v) for v in q_home)
        # derivative filters would otherwise see a jump of the whole arm within one millisecond
        for component in robot._tracked_state_components.values():
            for observer in component.observers.values():
                observer.clear()

    def _place(self, poses: dict[str, ObjectPose]) -> None:
        d = self.sim.data
        for name, pose in poses.items():
            a, v = self._obj_qpos[name], self._obj_dof[name]
            d.qpos[a:a + 3] = pose.position_m
            d.qpos[a + 3:a + 7] = pose.quaternion_wxyz
            d.qvel[v:v + 6] = 0.0
        self._mujoco.mj_forward(self.sim.model, d)

    def _objects(self) -> dict[str, Any]:
        d = self.sim.data
        return {"time_s": float(d.time), "objects": {
            name: {"position_m": d.qpos[a:a + 3].tolist(), "quaternion_wxyz": d.qpos[a + 3:a + 7].tolist()}
            for name, a in self._obj_qpos.items()}}

    # -- socket thread --------------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        self._sock.settimeout(0.2)
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    msg = json.loads(line)
                    op = msg.pop("op")
                except (ValueError, KeyError, AttributeError, TypeError):
                    reply = {"ok": False, "error": "a request is one JSON object per line with an 'op' key"}
                else:
                    if op == "task":
                        reply = {"ok": True, "task": self.task.name, "config": dataclasses.asdict(self.task)}
                    else:
                        req = _Request(op, msg)
                        self._pending.put(req)
                        if not req.done.wait(10.0):
                            reply = {"ok": False, "error": "the simulator loop did not run the request within 10 s"}
                        else:
                            reply = req.reply
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._closing.set()
        self._sock.close()
        self.socket_path.unlink(missing_ok=True)


class CellClient:
    """Client side of the control channel of the cell served on ``host``."""

    def __init__(self, host: str, timeout_s: float = 15.0) -> None:
        from gpc_ros.sim.shared_state import cell_paths

        self.host = host
        self._path = cell_paths(host)[2]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(self._path))
        except OSError as exc:
            self._sock.close()
            raise CellControlError(f"no cell control socket for {host} at {self._path} ({exc}): is the cell served "
                                   f"with a task?") from exc
        self._file = self._sock.makefile("rwb")

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request; the reply, or :class:`CellControlError` with the cell's sentence."""
        self._file.write((json.dumps({"op": op, **args}) + "\n").encode())
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise CellControlError(f"the cell on {self.host} closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CellControlError(reply.get("error", "unknown error"))
        return reply

    def reset(self, seed: int) -> dict[str, dict[str, list[float]]]:
        """Arm home, objects at the layout of ``seed``; returns the object poses after the reset."""
        return self.request("reset", seed=int(seed))["objects"]

    def objects(self) -> dict[str, Any]:
        """``{"time_s": t, "objects": {name: {"position_m", "quaternion_wxyz"}}}``."""
        return self.request("objects")

    def set_objects(self, poses: dict[str, ObjectPose]) -> dict[str, Any]:
        """Place objects at rest; returns every object's pose afterwards."""
        return self.request("set_objects", poses={n: {"position_m": list(p.position_m), "yaw_rad": p.yaw_rad}
                                                  for n, p in poses.items()})["objects"]

    def close(self) -> None:
        """Close the connection."""
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> "CellClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
