"""The GPC benchmark on the simulated cell: arms on fixed seeds through the real path, resumable and sharded
results, the online weight search, the report (docs/results.md). No rclpy."""
