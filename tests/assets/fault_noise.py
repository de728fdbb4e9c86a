"""A helper module of ``fault_plugin.py``, imported by name from beside it the way a plugin keeps
its own code in more than one file: bundles and Ray nodes must carry it along, and the package it
imports in turn."""

from fault_rng import generator


def seeded_noise(shape, scale: float, seed: int = 0):
    """Standard normal noise times ``scale``, the same for the same seed everywhere."""
    return scale * generator(seed).standard_normal(shape)
