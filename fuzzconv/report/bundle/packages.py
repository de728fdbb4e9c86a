"""What a bundle's ``repro.py`` needs installed, and the ``pip install`` line that pins it."""

from __future__ import annotations

import ast
import sys
from typing import TYPE_CHECKING

from ...registry import Operation, plugin_files

if TYPE_CHECKING:
    from .case import Case
    from .sources import Sources

#: Module repro.py imports → (pip distribution, key in a finding's ``versions``), in pin order.
DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "numpy"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "tensorflow": ("tensorflow", "tensorflow"),
    "keras": ("keras", "keras"),
    "tf2onnx": ("tf2onnx", "tf2onnx"),
    "torch": ("torch", "torch"),
    "torchvision": ("torchvision", "torchvision"),
    "onnx2torch": ("onnx2torch", "onnx2torch"),
    "onnxscript": ("onnxscript", "onnxscript"),
    "tvm": ("apache-tvm", "tvm"),
    "tvm_ffi": ("apache-tvm", "tvm"),  # installed with apache-tvm
}
#: Modules a step needs that its code never imports: torch.onnx.export(dynamo=True) uses
#: onnxscript.
IMPLIED = {"torch.onnx_export": ("onnxscript",)}


def packages(case: Case, sources: Sources) -> tuple[list[str], list[str]]:
    """What repro.py needs: the pip distributions (numpy, and what the copied code and the plugin
    files import), and the modules it checks before anything runs."""
    modules = [m for m in sources.modules if m not in sys.stdlib_module_names]
    for element in case.chain:
        modules += IMPLIED.get(element.name, ())
    if case.op.is_plugin:
        modules += sorted(m for m in _imported_modules(case.op) if m in DISTRIBUTIONS)
    modules = list(dict.fromkeys(["numpy", *modules]))
    dists = [d for m, (d, _) in DISTRIBUTIONS.items() if m in modules]
    return list(dict.fromkeys(dists)), modules


def pins(case: Case, dists: list[str]) -> str:
    """``pip install`` arguments: each distribution at the version the finding was made with."""
    versions = case.finding.get("versions") or {}
    keys = {d: k for d, k in DISTRIBUTIONS.values()}
    return " ".join(f"{d}=={versions[keys[d]]}" if versions.get(keys[d]) else d for d in dists)


def _imported_modules(op: Operation) -> set[str]:
    """Top-level modules a plugin step needs: what its file and the helpers beside it import at
    module level (to be imported at all), and what the step's own function imports."""
    import inspect
    import textwrap

    found: set[str] = set()

    def note(nodes: list[ast.stmt] | ast.AST) -> None:
        for node in nodes if isinstance(nodes, list) else ast.walk(nodes):
            if isinstance(node, ast.Import):
                found.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])

    for _rel, path in plugin_files(op.source_file or ""):
        try:
            note(ast.parse(path.read_bytes()).body)
        except (OSError, SyntaxError, ValueError):
            continue
    transform = getattr(op.fn, "fuzzconv_transform", None)
    try:
        note(ast.parse(textwrap.dedent(inspect.getsource(transform[1] if transform else op.fn))))
    except (OSError, TypeError, SyntaxError):
        pass
    return found
