"""The parameter helper (config dataclass <-> ROS parameters) on a real rclpy node, and every config/*.yaml holding
exactly its node's fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from gpc_ros.compose.composer import ComposerConfig
from gpc_ros.control.executor import ExecutorConfig
from gpc_ros.graph.composition import ComposerNodeConfig
from gpc_ros.graph.host import HostConfig
from gpc_ros.nodes.parameters import (
    build_config,
    config_values,
    field_docs,
    flat_fields,
)
from gpc_ros.paths import config_file
from gpc_ros.perception.camera_stream import CameraStreamConfig
from gpc_ros.perception.pointcloud import PointCloudConfig


@dataclass(frozen=True)
class Inner:
    """Nested part.

    Attributes:
        gain: how much (a Google-style entry).
    """

    gain: float = 1.0
    mode: str = "a"
    """a | b."""

    def __post_init__(self) -> None:
        if self.mode not in ("a", "b"):
            raise ValueError(f"Inner.mode must be one of ('a', 'b'); got {self.mode!r}")


@dataclass(frozen=True)
class Outer:
    rate_hz: float = 10.0
    """Rate (Hz)."""
    names: tuple[str, ...] = ("x", "y")
    """Names."""
    inner: Inner = field(default_factory=lambda: Inner(gain=2.0))

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"Outer.rate_hz must be > 0; got {self.rate_hz}")


def test_fields_flatten_with_the_nested_defaults_and_their_docs() -> None:
    by_name = {f.name: f for f in flat_fields(Outer)}
    assert list(by_name) == ["rate_hz", "names", "inner.gain", "inner.mode"]
    assert by_name["inner.gain"].default == 2.0  # the outer default instance, not Inner's class default
    assert by_name["inner.gain"].description == "how much (a Google-style entry)."
    assert by_name["names"].default == ["x", "y"] and by_name["rate_hz"].description == "Rate (Hz)."
    config = build_config(Outer, {"rate_hz": 5, "inner.mode": "b"})
    assert config == Outer(rate_hz=5.0, inner=Inner(gain=2.0, mode="b"))
    assert build_config(Outer, config_values(config)) == config


@pytest.mark.parametrize("cls", [ComposerNodeConfig, HostConfig, ExecutorConfig, PointCloudConfig,
                                 CameraStreamConfig])
def test_every_node_parameter_has_a_description(cls) -> None:
    described = {f.name for f in flat_fields(cls) if f.description}
    from gpc_ros.nodes import composer_node, franka_driver_node

    extra = {**composer_node.DESCRIPTIONS, **franka_driver_node.DESCRIPTIONS}
    missing = [f.name for f in flat_fields(cls) if f.name not in described and f.name not in extra]
    assert not missing, f"{cls.__name__}: no description for {missing}"


def test_a_node_refuses_bad_values_with_the_validation_text_and_keeps_its_config(rclpy_context) -> None:
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from gpc_ros.nodes.parameters import ConfigParameters

    node = Node("param_probe", context=rclpy_context)
    seen = []
    params = ConfigParameters(node, Outer, dynamic={"rate_hz", "inner.mode"}, on_change=seen.append)
    try:
        assert params.config == Outer()
        assert node.describe_parameter("rate_hz").description == "Rate (Hz)."
        bad = node.set_parameters([Parameter("rate_hz", value=-1.0)])[0]
        assert not bad.successful and bad.reason == "Outer.rate_hz must be > 0; got -1.0"
        assert params.config.rate_hz == 10.0 and node.get_parameter("rate_hz").value == 10.0
        nested = node.set_parameters([Parameter("inner.mode", value="c")])[0]
        assert not nested.successful and "Inner.mode must be one of" in nested.reason
        fixed = node.set_parameters([Parameter("names", value=["z"])])[0]
        assert not fixed.successful  # not dynamic: read-only at run time
        assert node.set_parameters([Parameter("rate_hz", value=20)])[0].successful  # an int for a float is fine
        assert params.config.rate_hz == 20.0 and seen[-1] == params.config
    finally:
        node.destroy_node()


def yaml_keys(block: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in block.items():
        if isinstance(value, dict):
            out |= yaml_keys(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def node_block(name: str) -> list[dict]:
    data = yaml.safe_load(config_file(name).read_text())
    return [block["ros__parameters"] for block in data.values()]


@pytest.mark.parametrize("file,cls,extra", [
    ("composer.yaml", ComposerNodeConfig, set()),
    ("policy_hosts.yaml", HostConfig, set()),
    ("camera.yaml", CameraStreamConfig, set()),
    ("franka_driver.yaml", ExecutorConfig, {"state_publish_rate_hz", "diagnostics_period_s"}),
    ("pointcloud.yaml", PointCloudConfig, {"camera_names", "base_frame", "output_topic", "max_camera_skew_s",
                                           "image_qos", "frame_timeout_s"}),
    # the simulated push_red cell (graph.yaml with use_sim)
    ("sim_policy_hosts.yaml", HostConfig, set()),
    ("sim_camera.yaml", CameraStreamConfig, set()),
    ("sim_pointcloud.yaml", PointCloudConfig, {"camera_names", "base_frame", "output_topic", "max_camera_skew_s",
                                               "image_qos", "frame_timeout_s"}),
])
def test_every_config_yaml_holds_exactly_its_nodes_fields(file, cls, extra) -> None:
    fields_ = {f.name for f in flat_fields(cls)} | extra
    for block in node_block(file):
        keys = yaml_keys(block)
        if file.endswith("pointcloud.yaml"):  # per-camera extrinsics: <camera>.camera_to_base_*
            cameras = set(block["camera_names"])
            keys = {k for k in keys if k.split(".")[0] not in cameras}
        assert keys == fields_, f"{file}: extra {sorted(keys - fields_)}, missing {sorted(fields_ - keys)}"
        if file not in ("camera.yaml", "sim_camera.yaml"):  # (templates: recording_path / serial / sim_host)
            values = {k: v for k, v in yaml_keys_values(block).items() if k in {f.name for f in flat_fields(cls)}}
            build_config(cls, values)  # and the values are valid


def yaml_keys_values(block: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in block.items():
        if isinstance(value, dict):
            out.update(yaml_keys_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_composer_config_docs_come_from_the_core() -> None:
    assert field_docs(ComposerConfig)["operator"].startswith("``convex``")


@pytest.mark.parametrize("file,base,cls,extra", [
    ("sim_composer.yaml", "composer.yaml", ComposerNodeConfig, set()),
    ("sim_franka_driver.yaml", "franka_driver.yaml", ExecutorConfig, {"state_publish_rate_hz", "diagnostics_period_s"}),
])
def test_sim_override_files_hold_only_their_nodes_fields_and_stay_valid(file, base, cls, extra) -> None:
    """The simulated cell's override files (graph.yaml sim_params_files): known fields, valid over their base file."""
    fields_ = {f.name for f in flat_fields(cls)} | extra
    (block,) = node_block(file)
    (base_block,) = node_block(base)
    assert yaml_keys(block) <= fields_, sorted(yaml_keys(block) - fields_)
    values = {**yaml_keys_values(base_block), **yaml_keys_values(block)}
    build_config(cls, {k: v for k, v in values.items() if k in {f.name for f in flat_fields(cls)}})
