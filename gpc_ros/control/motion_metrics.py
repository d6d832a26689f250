"""Measures of motion quality computed from recorded robot states (used by tests and bench/bench_driver.py)."""

from __future__ import annotations

import numpy as np


def windowed_speed_m_s(t_s: np.ndarray, positions_m: np.ndarray, window_s: float = 0.1,
                       return_end_times: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Speed (m/s) over sliding windows of ``window_s`` ending at each sample that has one at least 80 % full.

    ``t_s`` ``(N,)`` increasing times (s); ``positions_m`` ``(N, 3)``. State readings jitter; a window averages it.
    With ``return_end_times``: ``(speeds, the time each window ends)``.
    """
    out, ends, j = [], [], 0
    for i in range(len(t_s)):
        while t_s[i] - t_s[j] > window_s:
            j += 1
        if t_s[i] - t_s[j] >= 0.8 * window_s:
            out.append(np.linalg.norm(positions_m[i] - positions_m[j]) / (t_s[i] - t_s[j]))
            ends.append(t_s[i])
    return (np.array(out), np.array(ends)) if return_end_times else np.array(out)
