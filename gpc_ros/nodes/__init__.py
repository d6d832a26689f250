"""ROS 2 nodes of gpc_ros: thin wrappers (parameters, topics, conversions) over the ROS-free core.

The only package of gpc_ros that imports rclpy. Every node module has a ``main()`` used as its console script and
runs as ``python -m gpc_ros.nodes.<node> --ros-args --params-file config/<file>.yaml`` without a ROS install.
"""
