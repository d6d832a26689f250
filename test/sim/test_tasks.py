"""push_red: layouts per seed and the success check on hand-made states (successes and near misses)."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.sim.tasks import PushTaskConfig, get_task

TASK = get_task("push_red")
LINE = TASK.goal_line_x_m


def _state(target_x: float, distractor_x: float = 0.47, target_y: float = 0.05) -> dict[str, np.ndarray]:
    return {"target": np.array([target_x, target_y, 0.025]), "distractor1": np.array([distractor_x, -0.08, 0.025])}


@pytest.mark.parametrize("state, success, reason", [
    (_state(LINE + 0.02), True, "across the goal line"),
    (_state(LINE), True, "across the goal line"),  # the centre exactly on the line counts
    (_state(LINE - 0.001), False, "0.001 m short"),  # near miss: 1 mm short
    (_state(0.47), False, "short of the goal line"),  # never pushed
    (_state(LINE + 0.02, distractor_x=LINE + 0.001), False, "look-alike distractor1"),  # pushed both
    (_state(LINE - 0.01, distractor_x=LINE + 0.05), False, "look-alike distractor1"),  # pushed the wrong cube
    (_state(LINE + 0.02, target_y=0.5), False, "left the table"),
    ({"target": np.array([LINE + 0.05, 0.0, -0.2]), "distractor1": np.array([0.47, -0.1, 0.025])}, False,
     "left the table"),  # fell off the far edge
])
def test_success_check_on_hand_made_states(state, success, reason):
    outcome = TASK.evaluate(state)
    assert outcome.success is success
    assert reason in outcome.reason


def test_layouts_are_deterministic_spread_and_respect_the_gap():
    a, b = TASK.sample_layout(7), TASK.sample_layout(7)
    assert a == b
    assert TASK.sample_layout(8) != a
    for seed in range(200):
        layout = TASK.sample_layout(seed)
        ys = sorted(p.position_m[1] for p in layout.values())
        assert all(y2 - y1 >= TASK.min_lateral_gap_m for y1, y2 in zip(ys, ys[1:]))
        for pose in layout.values():
            assert TASK.spawn_x_m[0] <= pose.position_m[0] <= TASK.spawn_x_m[1]
            assert pose.position_m[0] + TASK.cube_half_size_m < LINE
            assert not TASK.evaluate({n: np.array(p.position_m) for n, p in layout.items()}).success


def test_bad_input_gets_one_clear_sentence():
    with pytest.raises(ValueError, match="unknown task 'push_blue'; known tasks: push_red"):
        get_task("push_blue")
    with pytest.raises(TypeError, match="seed must be an integer, got str"):
        TASK.sample_layout("3")
    with pytest.raises(ValueError, match="num_distractors must be an int in 0..3"):
        PushTaskConfig(num_distractors=5)
    with pytest.raises(ValueError, match="goal_line_x_m must lie beyond the spawn area"):
        PushTaskConfig(goal_line_x_m=0.5)
    with pytest.raises(KeyError, match="lack \\['distractor1'\\]"):
        TASK.evaluate({"target": np.zeros(3)})
