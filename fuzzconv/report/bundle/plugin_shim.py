"""Stands in for fuzzconv.plugins, so that a plugin file imports without fuzzconv.

fuzzconv's decorators register a function as a pipeline step; these only remember it under its
step name, which is all repro.py needs to call it. :func:`load` installs this module as
``fuzzconv.plugins`` (under an empty ``fuzzconv`` package) before importing the plugin file. A bug
bundle ships this file as ``fuzzconv_plugins_shim.py`` beside ``repro.py``.
"""

import importlib.util
import sys
import types
from pathlib import Path

#: The functions the plugin registered, by step name.
STEPS = {}
#: What the plugin's step functions get as their context (``StepContext`` in fuzzconv): the class
#: repro.py passes to :func:`load`.
StepContext = object


def _remember(name, **options):
    def deco(fn):
        STEPS[name] = fn
        return fn
    return deco


onnx_transform = tvm_transform = step = runtime = _remember


def load(path, name, context=None):
    """Import the plugin file at ``path`` and return the function it registered as step ``name``;
    ``context`` is the step context class its functions are given."""
    global StepContext
    if context is not None:
        StepContext = context
    package = sys.modules.setdefault("fuzzconv", types.ModuleType("fuzzconv"))
    package.__path__ = getattr(package, "__path__", [])
    package.plugins = sys.modules["fuzzconv.plugins"] = sys.modules[__name__]
    here = str(Path(path).resolve().parent)  # the modules of its own it imports sit beside it
    if here not in sys.path:
        sys.path.insert(0, here)
    if name not in STEPS:
        spec = importlib.util.spec_from_file_location("bundled_plugin", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return STEPS[name]
