"""LeRobotDataset v3.0 without lerobot: read, validate, write and train on it (pyarrow + PyAV).

``lerobot`` itself cannot be installed beside this project's torch, so the format is implemented here and checked
against lerobot's own loader and writer in an isolated environment (``test/policies/test_lerobot_compat.py``).
See docs/policies.md ("Datasets in LeRobot's format").
"""

from gpc_ros.policies.lerobot.format import CODEBASE_VERSION, LeRobotFormatError
from gpc_ros.policies.lerobot.reader import LeRobotReader, is_lerobot_dataset
from gpc_ros.policies.lerobot.writer import write_lerobot_dataset

__all__ = ["CODEBASE_VERSION", "LeRobotFormatError", "LeRobotReader", "is_lerobot_dataset",
           "write_lerobot_dataset"]
