"""Where ``tvm.pass`` gets its choices from, checked without TVM.

The orchestrator imports :mod:`fuzzconv.steps.tvm` (and its :mod:`~fuzzconv.steps.relax_passes`) and must not import TVM, so the step's
``name``/``args`` choices come from the pass list a tvm worker cached for the installed TVM version,
or from the module's verified fallback when there is no cache yet. Each case runs in a fresh
interpreter, because the choices are fixed when the module is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PROBE = """
import json, sys
from fuzzconv.registry import default_registry
from fuzzconv.steps.relax_passes import FALLBACK_PASSES, pass_cache_path
op = default_registry().get("tvm.pass")
print(json.dumps({"choices": op.choices, "defaults": op.defaults, "cache": str(pass_cache_path()),
                  "fallback": sorted(FALLBACK_PASSES),
                  "frameworks": sorted(m for m in sys.modules
                                       if m.split(".")[0] in ("tvm", "torch", "onnx"))}))
"""


def _tvm_version() -> str:
    try:
        return version("apache-tvm")
    except PackageNotFoundError:
        return "none"


def _registry_view(cache: Path) -> dict:
    env = {**os.environ, "FUZZCONV_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout)


def test_without_a_cache_the_choices_are_the_fallback(tmp_path: Path) -> None:
    view = _registry_view(tmp_path)
    assert view["cache"] == str(tmp_path / f"tvm-passes-{_tvm_version()}.json")
    assert view["choices"]["name"] == view["fallback"]
    assert "FoldConstant" in view["choices"]["name"]
    assert view["defaults"] == {"name": "FoldConstant", "args": {}}
    assert view["choices"]["args"][0] == {}
    assert {"fuse_opt_level": 2} in view["choices"]["args"]
    assert view["frameworks"] == []


def test_a_cached_list_gives_the_choices(tmp_path: Path) -> None:
    cached = {"tvm": _tvm_version(),
              "passes": {"FoldConstant": [{}], "FuseOps": [{}, {"fuse_opt_level": 0}],
                         "TopologicalSort": [{"order": "breadth-first"}]},
              "excluded": {}}
    (tmp_path / f"tvm-passes-{_tvm_version()}.json").write_text(json.dumps(cached))
    view = _registry_view(tmp_path)
    assert view["choices"]["name"] == ["FoldConstant", "FuseOps", "TopologicalSort"]
    assert view["choices"]["args"] == [{}, {"fuse_opt_level": 0}, {"order": "breadth-first"}]
    assert view["frameworks"] == []


def test_a_list_cached_for_another_tvm_version_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "tvm-passes-0.0.1.json").write_text(json.dumps({"passes": {"Bogus": [{}]}}))
    view = _registry_view(tmp_path)
    assert view["choices"]["name"] == view["fallback"]
