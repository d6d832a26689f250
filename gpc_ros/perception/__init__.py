"""Perception core (no rclpy): RGB-D frame sources and the depth -> base-frame point-cloud pipeline.

- :mod:`.frames`: the values every source produces (:class:`CameraIntrinsics`, :class:`RgbdFrame`) and the
  :class:`FrameSource` contract (a context manager with ``read(timeout_s)``) that RealSense devices, RealSense
  recordings and the simulation implement.
- :mod:`.realsense_source`: a live RealSense camera opened by serial (pyrealsense2 pipeline, depth aligned to colour).
- :mod:`.playback_source`: a recorded RealSense file (``.db3`` / ``.bag``) played back without dropping frames.
- :mod:`.recorder`: writes RealSense-format files from numpy arrays (software device + recorder).
- :mod:`.alignment`: depth -> colour alignment in numpy (for recordings whose depth is not aligned yet).
- :mod:`.timestamps`: the rule mapping hardware timestamps onto the ROS clock.
- :mod:`.pointcloud`: depth (+ colour) + intrinsics + extrinsic -> base-frame points -> crop -> voxel -> FPS.
"""
