"""The demo's parts without processes: its graph, its per-episode numbers, its configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from gpc_ros.demo.artifacts import FrontProjector
from gpc_ros.demo.session import (
    DemoConfig,
    composer_settings,
    demo_graph,
    envelope_interventions,
    episode_chunks,
    host_checkpoints,
)


def test_the_demo_graph_is_bringup_sim_plus_the_recorder_with_the_driver_enabled_explicitly(tmp_path) -> None:
    from gpc_ros.graph.description import describe_graph

    bringup = {p.name: p for p in describe_graph(use_sim=True, robot_ip="127.0.0.9").processes}
    graph = demo_graph(DemoConfig(weights=(0.3, 0.7)), "127.0.0.9", tmp_path / "bag")
    specs = {p.name: p for p in graph.processes}
    assert list(specs) == [*bringup, "recorder"]
    for name, spec in bringup.items():
        if name not in ("franka_driver", "composer"):
            assert specs[name] == spec
    assert specs["franka_driver"].parameters == {**bringup["franka_driver"].parameters, "require_enable": True}
    assert specs["composer"].parameters["weights"] == [0.3, 0.7]
    assert specs["recorder"].argv("py") == ["py", "-m", "gpc_ros.nodes.recorder_node", "-o", str(tmp_path / "bag"),
                                            "--ros-args", "-p", "use_sim_time:=true"]
    settings = composer_settings(graph)
    assert settings["parents"] == ["rgb", "dp3"] and settings["weights"] == [0.3, 0.7]
    assert host_checkpoints(graph, ["rgb", "dp3"]) == {"rgb": "push_red_diffusion_rgb",
                                                      "dp3": "push_red_dp3_xyzrgb_step100"}
    viewer = demo_graph(DemoConfig(viewer=True), "127.0.0.9", tmp_path / "bag")
    assert [p.name for p in viewer.processes][-2:] == ["recorder", "viewer_node"]


def test_episode_numbers_count_only_the_episode_and_only_envelope_counters() -> None:
    chunks = [(0.0, 9.9, 9.7), (0.0, 10.2, 10.0), (0.0, 10.6, 10.4), (0.0, 11.5, 11.0), (0.0, 12.1, 12.0)]
    assert episode_chunks(chunks, 10.0, 12.0) == (3, pytest.approx(0.2))  # latencies 0.2, 0.2, 0.5
    assert episode_chunks(chunks, 20.0, 21.0) == (0, None)
    before = {"interventions.clamped_speed": "4", "interventions.refused_disabled": "2", "connected": "true"}
    after = {"interventions.clamped_speed": "10", "interventions.refused_disabled": "9",
             "interventions.rejected_jump": "1", "interventions.dropped_past_due_steps": "5"}
    assert envelope_interventions(before, after) == {"clamped_speed": 6, "rejected_jump": 1}


@pytest.mark.parametrize("field,value,message", [
    ("episodes", 0, "DemoConfig.episodes must be an int >= 1; got 0"),
    ("seed", -1, "DemoConfig.seed must be an int >= 0; got -1"),
    ("time_limit_s", 0.0, "DemoConfig.time_limit_s must be > 0 simulated s or None; got 0.0"),
    ("weights", (0.5, float("nan")), "DemoConfig.weights must be finite numbers >= 0"),
    ("chunk_timeout_s", 0, "DemoConfig.chunk_timeout_s must be > 0 s; got 0"),
])
def test_bad_demo_settings_are_refused_naming_the_field(field, value, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DemoConfig(**{field: value})


def test_the_front_projector_puts_the_camera_axis_at_the_image_centre() -> None:
    from gpc_ros.sim.cameras import camera_to_base

    xyz, _ = camera_to_base("front")
    target = np.array([0.47, 0.0, 0.0])  # the front camera looks at (0.47, 0, 0) (docs/sim.md)
    project = FrontProjector(160, 120, scale=3)
    u, v = project(target[None])[0]
    assert (u, v) == pytest.approx((3 * 80 - 0.5, 3 * 60 - 0.5), abs=1e-6)
    behind = project(np.array(xyz)[None] + np.array([[0.5, 0.0, 0.0]]))  # behind the camera: not drawn
    assert np.isnan(behind).all()
