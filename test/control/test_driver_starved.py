"""The measured arm stays inside when the test machine starves the franky client (issue 9; CI failure of stop 19).

A CI run failed two driver safety tests that pass on an idle and on a loaded machine: the arm halted at joint 4
-0.1697 rad (the halt threshold is -0.1818) and the TCP 1.3 mm beyond box + tolerance. Reproduced by running the
scenarios in a CPU-quota cgroup (0.7 of a core for the client and franky-sim together, the CFS throttling a
quota'd CI runner applies): 5 of 12 scenarios halted, joint 4 commanded up to 0.0009 rad. Cause: the franky client
fell behind the ``fast`` simulator, which stepped on with stale commands; the client's catch-up step made
franky-sim's finite-difference ``dq_d`` jump to 0.5-0.8 rad/s, and every re-plan restarted from it. The simulator now
waits (bounded) for the client's command while a motion runs (``franky_sim_server._await_commands``), as a real FR3
and a real-time client stay in step. Here: the same scenarios, in a child process under the quota.

Needs a writable cgroup cpu controller (root: v1 ``/sys/fs/cgroup/cpu`` or v2 ``cpu.max``); skipped where there is
none, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# In the default run again since 2026-12-03 (session 12). It had been `slow` that day: it failed now and then for every
# driver version tried, fresh-clone CI runs included (1 run in 12-38; a corner halt with the measured TCP 48.5 / 56.8
# mm outside, a ramp into joint 4's halt margin). In franky's recordings of those runs a joint ran away from a start
# acceleration franky read in the state packets a *late client* gets: franky-sim's own values, after the simulator
# had stepped on without the client's command. Under this quota the CFS throttle (up to 30 ms) outlasted the
# simulator's 10 ms wait 0-40 times per scenario; with the 100 ms wait once the client commands in a motion it never
# did in 120 scenarios (docs/sim.md, *Clock, pace and lock-step*). Each row reports ``sim_stepped_on``.
pytestmark = [pytest.mark.timeout(900)]

#: The child's share of one core (its franky client and franky-sim together).
QUOTA_CORES = 0.7
#: Scenario pairs (ramp + corner) run under the quota; without the simulator's wait 5 of 12 scenarios failed.
ROUNDS = 3
#: Same tolerances as test_driver_safety_sim.py.
BOX_TOLERANCE_M = 0.015


def _cgroup_root() -> tuple[Path, str] | None:
    """(parent directory, kind) of a cgroup cpu controller this process may write, or None."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, "v1"
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.subtree_control"
    if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(v2, os.W_OK):
        return v2, "v2"
    return None


@contextlib.contextmanager
def cpu_quota(cores: float) -> Iterator[Path]:
    """A new cgroup limited to ``cores`` CPUs (CFS quota over 100 ms periods); yields its directory."""
    found = _cgroup_root()
    if found is None:
        pytest.skip("no writable cgroup cpu controller (needs root and /sys/fs/cgroup/cpu or cgroup v2 cpu.max)")
    root, kind = found
    group = root / f"gpc_ros_test_{os.getpid()}_{time.monotonic_ns()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {root}: {exc}")
    try:
        period = 100_000
        if kind == "v1":
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
        else:
            (group / "cpu.max").write_text(f"{int(cores * period)} {period}")
        yield group
    finally:
        for _ in range(50):  # the child's processes have exited; the kernel frees the group shortly after
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_a_starved_client_keeps_the_measured_arm_inside():
    with cpu_quota(QUOTA_CORES) as group:
        procs = group / "cgroup.procs"
        proc = subprocess.run(
            [sys.executable, __file__, "child", str(ROUNDS)],
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
            capture_output=True, text=True, timeout=800, cwd=Path(__file__).parent,
        )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(rows) == 2 * ROUNDS, (proc.returncode, proc.stdout[-2000:],
                                                            proc.stderr[-4000:])
    throttled = [r for r in rows if (r.get("throttled") or 0) > 0]
    for row in rows:
        assert row["fault"] is None, row
        assert row["joint_past_hw_rad"] == 0.0, row
        assert row["tcp_out_m"] <= BOX_TOLERANCE_M, row
        if row["scenario"] == "ramp":
            assert row["max_q4_rad"] < row["halt_q4_rad"], row
    assert throttled, "the quota never throttled the child: the test measured nothing"


# --- the child: runs the scenarios of test_driver_safety_sim.py inside the quota'd cgroup --------------------------

def _throttled_periods() -> int | None:
    """CFS periods this process's cgroup was throttled in so far (None when unknown)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(",") or (hierarchy == "0" and controllers == ""):
            base = Path("/sys/fs/cgroup/cpu") if "cpu" in controllers.split(",") else Path("/sys/fs/cgroup")
            stat = base / path.lstrip("/") / "cpu.stat"
            if stat.exists():
                for entry in stat.read_text().splitlines():
                    if entry.startswith("nr_throttled"):
                        return int(entry.split()[1])
    return None


def _child(rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_driver_safety_sim as safety

    from gpc_ros.control.envelope import SafetyEnvelopeConfig
    from gpc_ros.control.executor import ExecutionRefusedError
    from gpc_ros.sim.franky_sim_process import FrankySimProcess

    def emit(scenario: str, sim, executor, snaps, **extra) -> None:
        report = safety.measured_report(executor, snaps)
        # ticks the simulator stepped on without the client's command (0 while it stays in step)
        print(json.dumps({"scenario": scenario, "fault": executor.state.fault, "throttled": _throttled_periods(),
                          "sim_stepped_on": sim.stepped_on(), **report, **extra}), flush=True)

    for _ in range(rounds):
        with FrankySimProcess(pace="fast") as sim:
            executor, recorder = safety.start(sim.host, watchdog_timeout_s=5.0,
                                              envelope=SafetyEnvelopeConfig(**safety.WIDE_BOXES))
            with executor:
                n0 = len(recorder)
                limit = executor.guard.hard_upper_rad[3]
                try:
                    safety.ramp_joint4(executor, limit - 0.12)
                    for _ in range(10):
                        q = executor.state.joint_positions_rad
                        executor.execute(safety.joint_chunk(time.monotonic(), np.tile(
                            np.r_[q[:3], min(q[3] + 0.4, limit + 0.3), q[4:]], (5, 1))))
                        time.sleep(0.1)
                except ExecutionRefusedError:
                    pass  # faulted: reported below
                snaps = recorder.since(n0)
                emit("ramp", sim, executor, snaps, max_q4_rad=float(max(s.joint_positions_rad[3] for s in snaps)),
                     halt_q4_rad=float(limit - executor.config.envelope.joint_halt_margin_rad))
        with FrankySimProcess(pace="fast") as sim:
            executor, recorder = safety.start(sim.host, watchdog_timeout_s=5.0)
            with executor:
                quat = executor.state.ee_quaternion_xyzw.copy()
                n0 = len(recorder)
                counts = executor.interventions
                corner = np.array([0.75, 0.40, 0.05])
                try:
                    t_end = time.monotonic() + 120.0
                    while counts["clamped_containment"] + counts["projected_unreachable"] == 0 and \
                            time.monotonic() < t_end:
                        safety.stream_towards(executor, corner, quat, 0.25, 0.5)
                    safety.stream_towards(executor, corner, quat, 0.25, 1.5)
                except ExecutionRefusedError:
                    pass
                emit("corner", sim, executor, recorder.since(n0))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    import logging

    logging.basicConfig(level=logging.ERROR)
    _child(int(sys.argv[2]))
