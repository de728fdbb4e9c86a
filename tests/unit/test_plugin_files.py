"""A plugin kept in more than one file: the modules and packages beside it that it imports are
found from its source, import without any path set-up of its own, count in its cache key, and
travel with it to Ray nodes in one directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fuzzconv.distributed import _plugin_copy
from fuzzconv.registry import fresh_registry, plugin_files


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _plugin_dir(d: Path) -> Path:
    d.mkdir()
    (d / "pkg").mkdir()
    _write(d / "pkg" / "__init__.py", "")
    _write(d / "scale_of.py", """\
        from scale_base import BASE
        def factor(level):
            return BASE * level
        """)
    _write(d / "scale_base.py", "BASE = 2.0\n")
    _write(d / "unused.py", "raise RuntimeError('never imported')\n")
    _write(d / "broken.py", "def (:\n")
    return _write(d / "plug.py", """\
        import os, json
        import scale_of
        from pkg import thing
        import broken
        from fuzzconv.plugins import onnx_transform

        @onnx_transform("acme.scaled", level=[1, 2])
        def scaled(model, level=1):
            import scale_of as again  # run-time imports work too
            return model
        """)


def test_sources_are_the_plugin_and_the_modules_it_imports_transitively(tmp_path):
    plug = _plugin_dir(tmp_path / "p")
    names = [name for name, _ in plugin_files(plug)]
    # the plugin first; os/json are not beside it, unused is not imported, and a helper that does
    # not parse is carried without being followed
    assert names == ["plug.py", "scale_of.py", "pkg/__init__.py", "broken.py", "scale_base.py"]
    assert all(path == (tmp_path / "p" / name).resolve() for name, path in plugin_files(plug))


def test_a_plugin_imports_its_own_module_by_name(tmp_path):
    d = tmp_path / "q"
    d.mkdir()
    _write(d / "acme_helpers.py", "LEVELS = [1, 3]\n")
    plug = _write(d / "acme.py", """\
        from acme_helpers import LEVELS
        from fuzzconv.plugins import onnx_transform

        @onnx_transform("acme.levels", level=LEVELS)
        def levels(model, level=1):
            return model
        """)
    reg = fresh_registry([str(plug)])
    assert reg.get("acme.levels").choices["level"] == [1, 3]


def test_editing_a_helper_changes_the_cache_key(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    helper = _write(d / "r_helpers.py", "K = 1\n")
    plug = _write(d / "r_plugin.py", """\
        import r_helpers
        from fuzzconv.plugins import onnx_transform

        @onnx_transform("acme.k", k=[0, 1])
        def k(model, k=0):
            return model
        """)
    before = fresh_registry([str(plug)]).plugin_digest("acme.k")
    helper.write_text("K = 2\n")
    after = fresh_registry([str(plug)]).plugin_digest("acme.k")
    assert before and after and before != after


def test_a_ray_node_copy_keeps_the_group_and_the_cache_key(tmp_path):
    d = tmp_path / "driver"
    d.mkdir()
    _write(d / "node_helpers.py", "import node_base\nLEVELS = node_base.LEVELS\n")
    _write(d / "node_base.py", "LEVELS = [0, 4]\n")
    plug = _write(d / "node_plugin.py", """\
        from node_helpers import LEVELS
        from fuzzconv.plugins import onnx_transform

        @onnx_transform("acme.node", level=LEVELS)
        def node(model, level=0):
            return model
        """)
    files = tuple((name, s.read_bytes()) for name, s in plugin_files(plug))
    assert [n for n, _ in files] == ["node_plugin.py", "node_helpers.py", "node_base.py"]
    copy = Path(_plugin_copy(tmp_path / "node", files))
    assert copy.name == "node_plugin.py"
    assert sorted(p.name for p in copy.parent.iterdir()) == sorted(n for n, _ in files)
    assert _plugin_copy(tmp_path / "node", files) == str(copy)  # written once, found again
    edited = (files[0], (files[1][0], files[1][1] + b"\n"), files[2])
    assert Path(_plugin_copy(tmp_path / "node", edited)).parent != copy.parent
    # the copy loads from its own directory and hits the driver's cache entries
    ours = fresh_registry([str(plug)]).plugin_digest("acme.node")
    theirs = fresh_registry([str(copy)]).plugin_digest("acme.node")
    assert ours == theirs


def _package_plugin(d: Path) -> Path:
    d.mkdir()
    pkg = d / "acme_pkg"
    (pkg / "data").mkdir(parents=True)
    _write(pkg / "__init__.py", "")
    _write(pkg / "levels.py", "from ._base import BASE\nLEVELS = [BASE, BASE + 1]\n")
    _write(pkg / "_base.py", "BASE = 5\n")
    _write(pkg / "data" / "__init__.py", "")
    (pkg / "data" / "table.csv").write_text("not code\n")
    _write(d / "acme_pkg.py", "raise RuntimeError('the package comes first, as in Python')\n")
    return _write(d / "pkg_plugin.py", """\
        from acme_pkg.levels import LEVELS
        from fuzzconv.plugins import onnx_transform

        @onnx_transform("acme.pkg", level=LEVELS)
        def pkg(model, level=5):
            return model
        """)


def test_a_package_beside_the_plugin_travels_whole(tmp_path):
    plug = _package_plugin(tmp_path / "s")
    reg = fresh_registry([str(plug)])
    assert reg.get("acme.pkg").choices["level"] == [5, 6]
    # every module of the package (they import each other relatively), none of its other files,
    # nothing of the __pycache__ that loading it wrote, and not the module it shadows
    assert [name for name, _ in plugin_files(plug)] == [
        "pkg_plugin.py", "acme_pkg/__init__.py", "acme_pkg/_base.py", "acme_pkg/data/__init__.py",
        "acme_pkg/levels.py"]
    before = reg.plugin_digest("acme.pkg")
    (tmp_path / "s" / "acme_pkg" / "_base.py").write_text("BASE = 7\n")
    assert fresh_registry([str(plug)]).plugin_digest("acme.pkg") != before


def test_a_ray_node_copy_of_a_package_plugin_loads_with_the_same_key(tmp_path):
    plug = _package_plugin(tmp_path / "t")
    files = tuple((name, s.read_bytes()) for name, s in plugin_files(plug))
    copy = Path(_plugin_copy(tmp_path / "node", files))
    assert (copy.parent / "acme_pkg" / "_base.py").read_text() == "BASE = 5\n"
    ours = fresh_registry([str(plug)]).plugin_digest("acme.pkg")
    theirs = fresh_registry([str(copy)])
    assert theirs.plugin_digest("acme.pkg") == ours
    with pytest.raises(ValueError, match="beside it"):
        _plugin_copy(tmp_path / "node", files + (("../escape.py", b""),))
