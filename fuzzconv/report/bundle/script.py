"""Writing ``repro.py``: the harness with the finding's constants and fuzzconv's own code filled in.

``repro.py`` is :mod:`.harness` as it stands, with its two marked blocks replaced: the finding
block by this finding's constants, and the code block by the source of what that block imports
and of the function of every step and runtime the chain runs (:mod:`.sources`). A plugin's steps
are not copied: ``repro.py`` imports them from the bundled plugin file through
:mod:`.plugin_shim`. What the copied code imports is what ``repro.py`` needs installed.
"""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
from pathlib import Path
from typing import Any

from .case import Case, Variant
from .packages import packages, pins
from .readme import script_head
from .sources import CopyError, Sources

HARNESS = Path(__file__).with_name("harness.py")
SHIM = Path(__file__).with_name("plugin_shim.py")
#: Exit code of ``repro.py``'s child when a library is missing (the parent exits 2).
EXIT_MISSING = 3
FINDING_BLOCK = re.compile(r"(?ms)^# -- the finding -+\n.*?^# -- end of the finding -+\n")
CODE_BLOCK = re.compile(r"(?ms)^# -- fuzzconv's code -+\n.*?^# -- end of fuzzconv's code -+\n")

def chain_sources(case: Case) -> tuple[Sources, dict[str, str]]:
    """The code ``repro.py`` runs: what the harness's code block imports, and each chain
    element's function; with the expression that names each element's function in it."""
    sources = Sources()
    for module, names in _template_imports():
        for name in names:
            sources.add(getattr(importlib.import_module(module), name), name)
    functions: dict[str, str] = {}
    for element in case.chain:
        op = case.ex.registry.get(element.name)
        if op.is_plugin:
            transform = getattr(op.fn, "fuzzconv_transform", None)
            apply = f", {sources.add(transform[0])}" if transform else ""
            functions[op.name] = f"plugin_function({op.name!r}{apply})"
        else:
            functions[op.name] = sources.add(op.repro_fn)
    return sources, functions


def render(case: Case, variant: Variant) -> tuple[str, list[str]]:
    """The text of ``repro.py`` and the distributions it needs."""
    f = case.finding
    sources, functions = chain_sources(case)
    dists, modules = packages(case, sources)
    pin_line = pins(case, dists)
    plugin = "None"
    if case.op.is_plugin:
        plugin = f"HERE / 'plugin' / {Path(case.op.source_file or 'plugin.py').name!r}"
    values: dict[str, str] = {
        "FINDING": repr(f["id"]), "SYMPTOM": repr(f["symptom"]),
        "COMPARE": repr(variant.compare), "CULPRIT": repr(case.label),
        "CHAIN": _pretty([(e.name, e.params, case.output_file(e)) for e in case.chain]),
        "ERROR_CLASS": repr((f.get("failure") or {}).get("error_class")),
        "INPUT": f"HERE / 'input' / {variant.input_file!r}",
        "INPUTS": repr(variant.input_names), "MODEL": _pretty(variant.model),
        "DEVICE": repr(case.pipeline.device),
        "BATCH_SIZE": repr(max(case.ex.batch_size, len(variant.inputs))),
        "THRESHOLDS": repr(dict(sorted(vars(case.thresholds).items()))),
        "TIMEOUT_S": repr(float(case.ex.timeout_for(case.element.name))),
        "MODULES": repr(modules), "PINS": repr(pin_line), "PLUGIN": plugin,
        "EXIT_MISSING": repr(EXIT_MISSING)}
    template = HARNESS.read_text()
    clash = sources.names & _harness_names(template)
    if clash:
        raise CopyError(f"copied code would redefine repro.py's own {sorted(clash)[0]!r}")
    finding = _fill(FINDING_BLOCK.search(template).group(0), values)  # type: ignore[union-attr]
    code = ("# -- fuzzconv's code, copied from its source: this runs what fuzzconv ran ---------\n"
            + sources.text() + "\n\n#: The function of each step and runtime in CHAIN, by name.\n"
            "FUNCTIONS: dict[str, Callable[..., Any]] = {\n"
            + "".join(f"    {name!r}: {expr},\n" for name, expr in functions.items())
            + "}\n# -- end of fuzzconv's code " + "-" * 72 + "\n")
    text = CODE_BLOCK.sub(lambda _m: code, FINDING_BLOCK.sub(lambda _m: finding, template))
    text = _replace_docstring(text, script_head(case, dists))
    return text, dists


def culprit_source(case: Case) -> str:
    """The culprit's own function as ``repro.py`` runs it, for the issue text."""
    op = case.op
    if op.is_plugin:
        import inspect

        transform = getattr(op.fn, "fuzzconv_transform", None)
        return textwrap.dedent(inspect.getsource(transform[1] if transform else op.fn))
    sources = Sources()
    return sources.source_of(sources.add(op.repro_fn))


def shim_text() -> str:
    """``fuzzconv_plugins_shim.py``."""
    return SHIM.read_text()


def _template_imports() -> list[tuple[str, list[str]]]:
    """``(module, names)`` of the imports in the harness's code block."""
    block = CODE_BLOCK.search(HARNESS.read_text()).group(0)  # type: ignore[union-attr]
    return [(n.module or "", [a.name for a in n.names]) for n in ast.parse(block).body
            if isinstance(n, ast.ImportFrom)]


def _harness_names(template: str) -> set[str]:
    """What the harness itself defines at module level, outside its code block (its imports
    aside: the same libraries under the same names)."""
    own = ast.parse(CODE_BLOCK.sub("", template))
    names: set[str] = set()
    for node in own.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _fill(block: str, values: dict[str, str]) -> str:
    """The finding block with each ``NAME = ...`` statement replaced by ``NAME = value``; comments
    stay (a template's annotations go: the constants are plain assignments in repro.py)."""
    lines = block.splitlines(keepends=True)
    out, at, seen = [], 0, set()
    for node in ast.parse(block).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(target, ast.Name) or target.id not in values:
            continue
        out += lines[at:node.lineno - 1] + [f"{target.id} = {values[target.id]}\n"]
        at = node.end_lineno  # type: ignore[assignment]
        seen.add(target.id)
    missing = set(values) - seen
    if missing:
        raise ValueError(f"the harness has no constant {sorted(missing)[0]}")
    return "".join(out + lines[at:])


def _replace_docstring(text: str, head: str) -> str:
    tree = ast.parse(text)
    doc = tree.body[0]
    lines = text.splitlines(keepends=True)
    return "".join(lines[:doc.lineno - 1]) + head.rstrip("\n") + "\n" + "".join(
        lines[doc.end_lineno:])  # type: ignore[attr-defined]


def _pretty(value: Any) -> str:
    """A constant as Python source, wrapped at 99 columns."""
    import pprint

    return pprint.pformat(value, width=99, sort_dicts=False, compact=True)
