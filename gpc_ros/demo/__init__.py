"""``gpc-ros demo``: the whole graph on the simulated push_red cell with the shipped parents (docs/demo.md).

* :mod:`gpc_ros.demo.session`: starts the graph exactly as ``gpc-ros bringup --sim`` does (plus the recorder),
  runs seeded episodes through the cell's reset channel and reports each one;
* :mod:`gpc_ros.demo.artifacts`: from the recorded bag, the video with the TCP paths drawn over the front camera
  and the plot of executed vs predicted chunks;
* :mod:`gpc_ros.demo.cli`: the command; ``--analytic`` runs the earlier two-goal demo (:mod:`gpc_ros.demo.analytic`).
"""
