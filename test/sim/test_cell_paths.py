"""Every served cell has its own shared-state, meta and control files (several cells run on one machine)."""

from gpc_ros.sim.shared_state import cell_paths


def test_cells_on_different_addresses_never_share_a_file() -> None:
    a, b = cell_paths("127.0.0.9"), cell_paths("127.0.0.188")
    assert not set(a) & set(b)  # Path.with_suffix gave both "gpc_ros_sim_127.0.0.state" before (issue 15)
    assert [p.name for p in a] == ["gpc_ros_sim_127.0.0.9.state", "gpc_ros_sim_127.0.0.9.json",
                                   "gpc_ros_sim_127.0.0.9.sock"]
