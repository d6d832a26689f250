"""The GPC benchmark on the simulated cell (docs/benchmark.md, docs/results.md).

Arms on fixed seeds through the real path, resumable and sharded results, the online weight search, the report.
No rclpy.
"""
