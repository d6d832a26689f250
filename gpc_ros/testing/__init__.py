"""pytest fixtures and markers reused by every gpc_ros test (and by labs testing their own parents).

Loaded by ``test/conftest.py`` as the plugin :mod:`gpc_ros.testing.pytest_plugin`:

- ``ros_domain``: this test's own ROS_DOMAIN_ID (leased machine-wide), localhost discovery, the fast-discovery
  Fast DDS profile and the large-data transport, set in ``os.environ`` and given as ``ros_domain.env`` for children.
- ``franky_sim``: a franky-sim FR3 server in its own process on a free loopback address, always torn down.
- markers ``slow`` (long tests; deselect with ``-m "not slow"``).
"""
