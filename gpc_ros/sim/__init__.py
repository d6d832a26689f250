"""The simulated FR3 cell: franky-sim (MuJoCo, libfranka protocol on a loopback address)."""
