"""Simulators behind one interface (``sim.Simulator``): Meta-World (MuJoCo, headless), RLBench (CoppeliaSim,
imported lazily), the test fake; the keypose controller and headless rendering they share."""
