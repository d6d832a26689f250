"""The README's first command runs end to end: GPC composes two parents and the simulated FR3 goes where it should."""

import re
import subprocess
import sys


def test_demo_drives_the_simulated_arm_to_the_composed_goals():
    out = subprocess.run([sys.executable, "-m", "gpc_ros.cli", "demo", "--analytic", "--episode-s", "3.5"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "result: OK" in out.stdout
    # one line per weight vector, each with its own error; the mixed weights land between the parents' goals
    rows = re.findall(r"^\s+([01]\.\d\d)\s+([01]\.\d\d) \|.*\|\s+([\d.]+)mm \|", out.stdout, flags=re.M)
    assert [(float(a), float(b)) for a, b, _ in rows] == [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0)]
    assert all(float(err) < 20.0 for _, _, err in rows)
