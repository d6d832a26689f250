"""Action chunks, latency compensation and seam blending (pure numpy, tables of cases)."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.control.chunk import ActionChunk, ChunkRejectedError
from gpc_ros.control.timing import SeamBlender, TimingConfig, drop_past_due, sample

Q_DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def line_chunk(start_s: float, n: int, y0: float, dy: float, dt_s: float = 0.1, gripper: bool = False):
    pos = np.tile([0.5, 0.0, 0.4], (n, 1))
    pos[:, 1] = y0 + dy * np.arange(n)
    return ActionChunk.from_arrays(start_s, dt_s, positions_m=pos, quaternions_xyzw=np.tile(Q_DOWN, (n, 1)),
                                   gripper_width_m=np.full(n, 0.05) if gripper else None)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(positions_m=np.zeros((4, 2)), quaternions_xyzw=np.tile(Q_DOWN, (4, 1))), "positions_m must have shape"),
    (dict(positions_m=np.zeros((4, 3)), quaternions_xyzw=np.tile(Q_DOWN, (3, 1))), "must have 4 rows"),
    (dict(positions_m=np.full((2, 3), np.nan), quaternions_xyzw=np.tile(Q_DOWN, (2, 1))), "finite"),
    (dict(positions_m=np.zeros((2, 3)), quaternions_xyzw=np.zeros((2, 4))), "unit quaternions"),
    (dict(positions_m=np.zeros((2, 3))), "needs both"),
    (dict(), "neither"),
    (dict(positions_m=np.zeros((2, 3)), quaternions_xyzw=np.tile(Q_DOWN, (2, 1)),
          joint_positions_rad=np.zeros((2, 7))), "both"),
    (dict(joint_positions_rad=np.zeros((2, 6))), "joint_positions_rad must have shape (N, 7)"),
    (dict(joint_positions_rad=np.zeros((2, 7)), gripper_width_m=np.zeros(3)), "gripper_width_m must have 2 rows"),
    (dict(positions_m=np.zeros((0, 3)), quaternions_xyzw=np.zeros((0, 4))), "1..1024 steps"),
    (dict(positions_m=[["a", 1, 2]], quaternions_xyzw=[Q_DOWN]), "float array"),
])
def test_malformed_chunks_are_rejected_with_the_field_named(kwargs, fragment):
    with pytest.raises(ChunkRejectedError, match=None) as info:
        ActionChunk.from_arrays(0.0, 0.1, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("dt", [0.0, 1e-300, -0.1, float("nan"), float("inf"), 11.0])
def test_bad_dt_is_rejected(dt):
    with pytest.raises(ChunkRejectedError, match="dt_s"):
        line_chunk(0.0, 3, 0.0, 0.01, dt_s=dt)


def test_quaternions_are_renormalised_and_sign_continuous():
    q = np.array([[0.0, 0.0, 0.0, 1.1], [0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.1, -1.0]])
    chunk = ActionChunk.from_arrays(0.0, 0.1, positions_m=np.zeros((3, 3)), quaternions_xyzw=q)
    np.testing.assert_allclose(np.linalg.norm(chunk.quaternions_xyzw, axis=1), 1.0)
    assert np.all(chunk.quaternions_xyzw[:, 3] > 0)


def test_chunks_are_immutable_values():
    chunk = line_chunk(0.0, 3, 0.0, 0.01)
    with pytest.raises(ValueError):
        chunk.positions_m[0, 0] = 1.0


@pytest.mark.parametrize("now, lookahead, first_kept", [
    (-1.0, 0.0, 0), (0.0, 0.0, 0), (0.05, 0.0, 1), (0.1, 0.0, 1), (0.25, 0.0, 3), (0.25, 0.1, 4), (0.9, 0.0, 9),
])
def test_drop_past_due_keeps_steps_due_from_now_plus_lookahead(now, lookahead, first_kept):
    chunk = line_chunk(0.0, 10, 0.0, 0.01)
    kept = drop_past_due(chunk, now, lookahead)
    assert kept.n_steps == 10 - first_kept
    assert kept.start_time_s == pytest.approx(0.1 * first_kept)
    np.testing.assert_allclose(kept.positions_m, chunk.positions_m[first_kept:])


def test_drop_past_due_returns_none_when_everything_is_late():
    assert drop_past_due(line_chunk(0.0, 10, 0.0, 0.01), now_s=1.0) is None


def test_sample_interpolates_and_holds_at_the_ends():
    chunk = line_chunk(1.0, 3, 0.0, 0.1)
    assert sample(chunk, 1.05).position_m[1] == pytest.approx(0.05)
    assert sample(chunk, 0.0).position_m[1] == pytest.approx(0.0)
    assert sample(chunk, 9.0).position_m[1] == pytest.approx(0.2)


def test_replace_takes_the_new_chunk_from_its_first_due_step():
    blender = SeamBlender(TimingConfig(blend_mode="replace"))
    blender.add(line_chunk(0.0, 10, 0.0, 0.01), now_s=0.0)
    plan = blender.add(line_chunk(0.3, 10, 1.0, 0.01), now_s=0.3)
    np.testing.assert_allclose(plan.positions_m[:, 1], 1.0 + 0.01 * np.arange(10))


def test_crossfade_moves_linearly_from_old_to_new_over_k_steps():
    blender = SeamBlender(TimingConfig(blend_mode="crossfade", crossfade_steps=3))
    blender.add(line_chunk(0.0, 10, 0.0, 0.0), now_s=0.0)  # old plan: y = 0
    plan = blender.add(line_chunk(0.3, 10, 1.0, 0.0), now_s=0.3)  # new: y = 1
    np.testing.assert_allclose(plan.positions_m[:5, 1], [0.25, 0.5, 0.75, 1.0, 1.0])
    assert plan.start_time_s == pytest.approx(0.3)


def test_crossfade_blends_quaternions_on_the_short_arc():
    blender = SeamBlender(TimingConfig(blend_mode="crossfade", crossfade_steps=1))
    q_a = np.array([0.0, 0.0, 0.0, 1.0])
    q_b = -np.array([0.0, 0.0, np.sin(0.2), np.cos(0.2)])  # same small rotation, opposite sign
    n = 4
    blender.add(ActionChunk.from_arrays(0.0, 0.1, positions_m=np.zeros((n, 3)),
                                        quaternions_xyzw=np.tile(q_a, (n, 1))), 0.0)
    plan = blender.add(ActionChunk.from_arrays(0.1, 0.1, positions_m=np.zeros((n, 3)),
                                               quaternions_xyzw=np.tile(q_b, (n, 1))), 0.1)
    angle = 2 * np.arccos(abs(plan.quaternions_xyzw[0] @ q_a))
    assert angle == pytest.approx(0.2, abs=1e-3)  # half of the 0.4 rad between them, not the long way round


def test_ensemble_averages_overlapping_predictions_with_exponential_weights():
    m = 0.5
    blender = SeamBlender(TimingConfig(blend_mode="ensemble", ensemble_decay=m))
    blender.add(line_chunk(0.0, 10, 0.0, 0.0), now_s=0.0)    # predicts y = 0 on [0, 0.9]
    blender.add(line_chunk(0.2, 10, 1.0, 0.0), now_s=0.2)    # y = 1 on [0.2, 1.1]
    plan = blender.add(line_chunk(0.4, 10, 2.0, 0.0), now_s=0.4)  # y = 2 on [0.4, 1.3]
    w = np.exp(-m * np.arange(3))
    np.testing.assert_allclose(plan.positions_m[0, 1], (w @ [0.0, 1.0, 2.0]) / w.sum())  # t = 0.4: all three
    w2 = np.exp(-m * np.arange(2))
    np.testing.assert_allclose(plan.positions_m[6, 1], (w2 @ [1.0, 2.0]) / w2.sum())  # t = 1.0: last two
    np.testing.assert_allclose(plan.positions_m[9, 1], 2.0)  # t = 1.3: only the newest


def test_a_late_chunk_leaves_the_plan_unchanged():
    blender = SeamBlender(TimingConfig())
    plan = blender.add(line_chunk(0.0, 10, 0.0, 0.01), now_s=0.0)
    assert blender.add(line_chunk(0.0, 3, 0.0, 0.01), now_s=5.0) is None
    assert blender.plan is plan


def test_switching_between_cartesian_and_joint_targets_is_rejected():
    blender = SeamBlender(TimingConfig())
    blender.add(line_chunk(0.0, 10, 0.0, 0.01), now_s=0.0)
    with pytest.raises(ChunkRejectedError, match="switch"):
        blender.add(ActionChunk.from_arrays(0.1, 0.1, joint_positions_rad=np.zeros((3, 7))), now_s=0.1)


@pytest.mark.parametrize("field, value, fragment", [
    ("blend_mode", "average", "blend_mode must be one of"),
    ("crossfade_steps", 0, "crossfade_steps"),
    ("lookahead_s", -0.1, "lookahead_s"),
    ("ensemble_decay", float("nan"), "ensemble_decay"),
    ("ensemble_history", 0, "ensemble_history"),
])
def test_timing_config_names_the_bad_field(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        TimingConfig(**{field: value})
