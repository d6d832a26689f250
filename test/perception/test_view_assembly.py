"""Which frames make one cloud: primary camera sets the rate, others within max_skew_s, colour matched by stamp."""

from __future__ import annotations

import numpy as np

from gpc_ros.perception.frames import CameraIntrinsics
from gpc_ros.perception.view_assembly import CameraViewAssembler

K = CameraIntrinsics(4, 3, 3.0, 3.0, 1.5, 1.0)
DEPTH = np.ones((3, 4), np.float32)
RGB = np.zeros((3, 4, 3), np.uint8)


def test_primary_sets_the_rate_and_others_join_within_skew():
    assembler = CameraViewAssembler({"front": np.eye(4), "side": np.eye(4)}, max_skew_s=0.05, with_color=False)
    assert assembler.add_depth("side", 10.00, DEPTH, K) is None  # not the primary
    first = assembler.add_depth("front", 10.02, DEPTH, K)
    assert first.stamp_s == 10.02 and len(first.views) == 2 and first.missing == []
    late = assembler.add_depth("front", 10.20, DEPTH, K)  # side's frame is 0.2 s old now
    assert len(late.views) == 1 and late.missing == ["side"]


def test_colour_completes_a_waiting_depth_frame_in_either_order():
    assembler = CameraViewAssembler({"front": np.eye(4)}, max_skew_s=0.05, with_color=True)
    assert assembler.add_depth("front", 1.0, DEPTH, K) is None  # waits for its colour
    assert assembler.add_color("front", 0.9, RGB) is None  # an older colour does not complete it
    done = assembler.add_color("front", 1.0, RGB + 7)
    assert done.stamp_s == 1.0 and done.views[0].color_rgb[0, 0, 0] == 7
    assert assembler.add_color("front", 1.0, RGB) is None  # completed once only
    assembler.add_color("front", 2.0, RGB + 9)  # colour first, then depth
    done = assembler.add_depth("front", 2.0, DEPTH, K)
    assert done.views[0].color_rgb[0, 0, 0] == 9
