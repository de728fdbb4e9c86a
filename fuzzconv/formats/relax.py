"""TVM Relax artifacts: a Relax IRModule as a file, and what runs one.

Two artifact formats belong to TVM:

- ``relax`` (``module.json``): a Relax IRModule. The file is JSON holding the module as TVMScript
  text; its tensor constants (the weights) lie beside it in ``module.constants.npz``.
  ``tvm.ir.save_json`` is not used because with the apache-tvm-ffi this stack pins (0.1.15.post2)
  it segfaults in ``tvm::ffi::ToJSONGraph`` on *any* TVM IR object, even an ``IntImm``
  (0.1.14.x serialises fine), and ``script(show_meta=True)`` goes through the same code. So
  :func:`save_relax` prints the module without metadata, where the printer writes each
  non-scalar constant as ``metadata["ir.GenericConst"][i]``, stores those constants in printing
  order, and :func:`load_relax` parses the text with ``metadata`` bound to the re-created
  constants. Scalars are printed inline. Every save parses its own output back and checks it is
  structurally equal to the module (constants compared by value), so a module that would not
  survive the round trip fails loudly at the step that made it instead of changing silently.
- ``tvm`` (``lib.so``): a Relax VM executable exported with ``export_library``, loaded with
  ``tvm.runtime.load_module`` and run by ``relax.VirtualMachine``; entry function ``main``, whose
  result :func:`vm_output` turns into numpy.

The input layout of both is recorded beside them (:mod:`fuzzconv.formats.layout`). TVM is imported
inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm

RELAX_FORMAT = "fuzzconv.relax"
RELAX_VERSION = 1
# How the TVMScript printer refers to an object it does not print inline.
_META_REF = re.compile(r'metadata\["([^"]+)"\]\[(\d+)\]')
# The printer writes non-finite scalar constants as R.const("inf", "float32") (also "-inf",
# "nan"), which its own parser refuses ("value has to be scalar or Tensor"); ONNX Clip imports
# into exactly such constants. They are rewritten to names bound at parse time.
_NONFINITE = re.compile(r'R\.const\("(-?)(inf|nan)", ')


def _constants_path(path: Path) -> Path:
    return path.parent / f"{path.stem}.constants.npz"


def _printed_constants(mod: "tvm.IRModule", text: str) -> list:
    """The module's tensor constants in the order the printer numbered them in ``text``.

    The printer numbers constants as it first meets them, walking functions in the order it
    prints them and each function's bindings in order; scalars it prints inline.
    """
    from tvm import relax

    found: list = []

    @relax.expr_functor.visitor
    class _Collect(relax.PyExprVisitor):
        def visit_generic_const_(self, op: Any) -> None:
            if getattr(op.ty, "ndim", 0) != 0 and not any(op.same_as(c) for c in found):
                found.append(op)

    funcs = [(text.find(f"def {gv.name_hint}("), fn) for gv, fn in mod.functions_items()
             if isinstance(fn, relax.Function)]
    for _, fn in sorted(funcs, key=lambda t: t[0]):
        _Collect().visit_expr(fn)
    return found


def _parse_relax(text: str, arrays: list[np.ndarray]) -> "tvm.IRModule":
    import tvm
    from tvm import relax
    # The parser's own global table (I, R, T, ...); passing extra_vars replaces it, so extend it.
    from tvm.script.parser.core.entry import _default_globals

    names = dict(_default_globals())
    names.update(inf=float("inf"), nan=float("nan"))
    names["metadata"] = {"ir.GenericConst": [relax.const(a) for a in arrays]}
    return tvm.script.from_source(text, extra_vars=names)


def save_relax(mod: "tvm.IRModule", path: Path) -> None:
    """Write a Relax IRModule as ``path`` (JSON with the TVMScript text) plus its constants.

    Raises:
        RuntimeError: the module does not survive printing and parsing back unchanged.
    """
    import tvm_ffi

    path = Path(path)
    text = _NONFINITE.sub(lambda m: f"R.const({m[1]}{m[2]}, ", mod.script(show_meta=False))
    refs = _META_REF.findall(text)
    kinds = sorted({k for k, _ in refs} - {"ir.GenericConst"})
    if kinds:
        raise RuntimeError(f"the module holds objects TVMScript cannot print inline: {kinds}")
    consts = _printed_constants(mod, text)
    if len(consts) != len({i for _, i in refs}):
        raise RuntimeError(f"found {len(consts)} tensor constants but the TVMScript text refers "
                           f"to {len({i for _, i in refs})}")
    arrays = [c.value.numpy() for c in consts]
    if not tvm_ffi.structural_equal(mod, _parse_relax(text, arrays)):
        raise RuntimeError("the Relax module does not survive the TVMScript round trip")
    np.savez(_constants_path(path), **{f"c{i}": a for i, a in enumerate(arrays)})
    doc = {"format": RELAX_FORMAT, "version": RELAX_VERSION, "tvm": tvm_version(),
           "constants": _constants_path(path).name, "count": len(arrays), "script": text}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    remember_module(path, mod)


def load_relax(path: Path) -> "tvm.IRModule":
    """Read a Relax IRModule written by :func:`save_relax`."""
    path = Path(path)
    known = recalled_module(path)
    if known is not None:
        return known.clone()  # a caller (a plugin, say) may set functions of what it gets
    doc = json.loads(path.read_text())
    if doc.get("format") != RELAX_FORMAT or doc.get("version") != RELAX_VERSION:
        raise ValueError(f"{path} is not a fuzzconv relax artifact (version {RELAX_VERSION})")
    with np.load(path.parent / doc["constants"], allow_pickle=False) as npz:
        arrays = [npz[f"c{i}"] for i in range(doc["count"])]
    mod = _parse_relax(doc["script"], arrays)
    remember_module(path, mod)
    return mod


# The last few Relax modules a worker saved or loaded, by artifact identity (see
# :func:`remember_module`), so the steps that follow one another on a module do not parse it again.
RECENT_MODULES: dict = {}
RECENT_SIZE = 2


def artifact_identity(path: Path) -> tuple | None:
    """What identifies a Relax artifact: its text and its constants file's size and modification
    time, which survive the cache moving the artifact into place (artifacts are never rewritten
    in place)."""
    try:
        npz = os.stat(_constants_path(path))
        return (hashlib.sha256(Path(path).read_bytes()).hexdigest(), npz.st_size, npz.st_mtime_ns)
    except OSError:
        return None


def recalled_module(path: Path) -> Any:
    """The module at ``path`` if this process saved or loaded it lately, else None."""
    key = artifact_identity(path)
    mod = RECENT_MODULES.pop(key, None) if key is not None else None
    if mod is not None:
        RECENT_MODULES[key] = mod  # most recent last
    return mod


def remember_module(path: Path, mod: Any) -> None:
    """Keep ``mod`` as the module at ``path`` for a while.

    Parsing a module's TVMScript takes seconds (two of a TVM pass's eight on MobileNetV2): a hunt
    applies dozens of passes to the same imported module and builds each result right after the
    pass saved it, in the same worker. :func:`load_relax` hands out a clone, so a caller that sets
    a function of its module changes nothing here.
    """
    key = artifact_identity(path)
    if key is None:
        return
    RECENT_MODULES.pop(key, None)
    RECENT_MODULES[key] = mod
    while len(RECENT_MODULES) > RECENT_SIZE:
        RECENT_MODULES.pop(next(iter(RECENT_MODULES)))


def tvm_version() -> str:
    """apache-tvm's version, from package metadata (nothing is imported)."""
    try:
        return version("apache-tvm")
    except PackageNotFoundError:
        return "none"


def vm_output(out: Any) -> np.ndarray:
    """A VM result as numpy; a tuple result gives its first element (the logits)."""
    while not hasattr(out, "numpy"):
        out = out[0]
    return out.numpy()
