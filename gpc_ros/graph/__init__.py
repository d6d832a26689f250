"""The node graph without ROS: protocol, host and composer cores, graph description and supervisor.

The per-step protocol, the policy host's and the composer's cores, the graph description (config/graph.yaml) and
the process supervisor behind ``gpc-ros bringup``. See docs/graph.md and docs/protocol.md.
"""
