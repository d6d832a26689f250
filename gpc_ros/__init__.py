"""gpc_ros: General Policy Composition of diffusion and flow-matching robot policies, for ROS 2 and Franka arms.

Subpackages (only ``gpc_ros.nodes`` imports rclpy):

- ``gpc_ros.compose``    GPC core: parameterisations, schedules, samplers, operators, weight search, warm start
- ``gpc_ros.policies``   torch parent policies (RGB diffusion, point-cloud, flow), checkpoints, training
- ``gpc_ros.perception`` RealSense / recording / simulation sources, depth -> point cloud
- ``gpc_ros.control``    chunk timing, safety envelope, franky executor, watchdog
- ``gpc_ros.sim``        the simulated FR3 cell on franky-sim
- ``gpc_ros.nodes``      thin ROS 2 nodes over the above
- ``gpc_ros.testing``    pytest fixtures (isolated ROS domains, franky-sim servers) reused by every test
"""

__version__ = "0.1.0"
