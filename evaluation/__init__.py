"""Simulators behind one interface, keypose controllers, dataset collection, Ray evaluation actors."""
