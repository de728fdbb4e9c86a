"""The peer comparison scripts of ``benchmarks/peers/`` as modules, for their tests (they are
scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"


def load_peer(name: str) -> ModuleType:
    """``benchmarks/peers/NAME.py``, imported as ``peers_NAME``, with its siblings importable as
    they are when it runs as a script."""
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    spec = importlib.util.spec_from_file_location(f"peers_{name}", PEERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
