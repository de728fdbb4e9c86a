"""A helper package of ``fault_plugin.py`` (through ``fault_noise.py``): plugins may keep code in
packages beside them, which bundles and Ray nodes carry whole."""

from .seeds import generator

__all__ = ["generator"]
