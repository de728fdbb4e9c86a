"""A worker that saved or loaded a Relax module hands it out again without parsing it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import needs


@needs("tvm")
def test_a_saved_module_is_loaded_without_parsing_and_as_a_clone(tmp_path: Path, monkeypatch):
    import numpy as np
    import tvm
    import tvm_ffi
    from tvm.script import relax as R

    import fuzzconv.formats.relax as fr

    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 3), "float32")) -> R.Tensor((2, 3), "float32"):
            return R.add(x, R.const(np.ones((2, 3), "float32")))

    path = tmp_path / "module.json"
    fr.save_relax(Mod, path)
    parsed = []
    real = fr._parse_relax
    monkeypatch.setattr(fr, "_parse_relax", lambda *a: parsed.append(1) or real(*a))
    back = fr.load_relax(path)
    assert not parsed and tvm_ffi.structural_equal(back, Mod)
    back["other"] = back["main"]  # a caller changing its copy changes nothing kept
    assert "other" not in [gv.name_hint for gv in fr.load_relax(path).get_global_vars()]
    # moved into place as the cache does: still recognised; edited: parsed again
    moved = tmp_path / "final"
    moved.mkdir()
    for f in tmp_path.glob("module.*"):
        f.rename(moved / f.name)
    assert fr.load_relax(moved / "module.json") is not None and not parsed
    (moved / "module.json").write_text((moved / "module.json").read_text() + " ")
    fr.load_relax(moved / "module.json")
    assert parsed == [1]
