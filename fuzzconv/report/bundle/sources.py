"""Copying fuzzconv's own code into ``repro.py``: each step owns its recipe, and this copies it.

A bundle's ``repro.py`` must compute what fuzzconv computed, without fuzzconv. So it does not hold a
second implementation of a step or a runtime: :class:`Sources` copies the source text of the very
functions fuzzconv ran (``inspect.getsource``), with everything they use at module level,
transitively — the helpers they call, the classes they build, the constants they read, and import
lines for the other libraries they name. What a function imports inside its body (the
frameworks) is copied with it, and those imports are what ``repro.py`` needs installed
(:attr:`Sources.modules`).

Rules a copied function must keep (the steps do, and ``tests/unit/test_bundle_sources.py`` checks
every built-in step and runtime): it is defined at module level (no closures), it reaches other
fuzzconv code through module-level names (not imports inside its body), and the module-level
values it reads are plain data (numbers, strings, containers of them, compiled patterns) or
fuzzconv functions. A value the module writes as a literal is copied as written, not as it is now:
a per-process memo (a worker's recently loaded modules) starts empty in ``repro.py``. A name bound to two different things in two modules cannot be copied. The
registration decorators of :mod:`fuzzconv.plugins` and :mod:`fuzzconv.protocol` are dropped;
other decorators (``dataclass``) stay.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import re
import sys
import textwrap
import types
from typing import Any, Iterator


class CopyError(TypeError):
    """Something a function uses cannot be copied into a standalone script."""


def is_fuzzconv(obj: Any) -> bool:
    """Whether ``obj`` (a function, class or module) is fuzzconv's own code."""
    name = getattr(obj, "__name__", "") if isinstance(obj, types.ModuleType) else getattr(
        obj, "__module__", "") or ""
    return name == "fuzzconv" or name.startswith("fuzzconv.")


class Sources:
    """The source text of a set of fuzzconv functions and classes and of what they use.

    Add roots with :meth:`add`; :meth:`text` is then Python that defines each of them under its
    own name, dependencies first.
    """

    def __init__(self) -> None:
        self._bound: dict[str, Any] = {}  # name in the script -> the object it holds
        self._imports: dict[str, str] = {}  # name -> the import line that binds it
        self._defs: list[tuple[str, str]] = []  # (name, source), dependencies first
        self._modules: set[str] = set()  # top-level modules imported anywhere in the code

    # -- adding ---------------------------------------------------------------------------------
    def add(self, obj: Any, name: str | None = None) -> str:
        """Make ``obj`` available in the script (as ``name``, by default its own); returns the name.

        Raises:
            CopyError: ``obj`` or something it uses cannot be copied.
        """
        name = name or getattr(obj, "__name__", None)
        if not name:
            raise CopyError(f"{obj!r} has no name to copy it under")
        if name in self._bound:
            if self._bound[name] is not obj and not _same_value(self._bound[name], obj):
                raise CopyError(f"{name!r} names two different things: {self._bound[name]!r} "
                                f"and {obj!r}")
            return name
        self._bound[name] = obj
        if isinstance(obj, types.ModuleType):
            if is_fuzzconv(obj):
                raise CopyError(f"{name} is fuzzconv's module {obj.__name__}: use its functions")
            self._import(name, _module_import(obj, name), obj.__name__)
        elif inspect.isfunction(obj) or inspect.isclass(obj):
            if is_fuzzconv(obj):
                self._define(name, obj)
            else:
                self._import(name, _object_import(obj, name), obj.__module__)
        else:
            self._defs.append((name, f"{name} = {self._render(obj, name)}"))
        return name

    def _import(self, name: str, line: str, module: str) -> None:
        self._imports[name] = line
        self._modules.add(module.partition(".")[0])

    def _define(self, name: str, obj: Any) -> None:
        if inspect.isfunction(obj) and obj.__closure__:
            raise CopyError(f"{obj.__qualname__} is a closure; only module-level functions copy")
        if "<locals>" in obj.__qualname__:
            raise CopyError(f"{obj.__qualname__} is not defined at module level")
        if name != obj.__name__:
            raise CopyError(f"{obj.__qualname__} would be copied under another name, {name!r}")
        module = sys.modules[obj.__module__]
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source).body[0]
        assert isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        kept = [d for d in tree.decorator_list if not _registers(d, module)]
        lines = source.splitlines()
        body = "\n".join(lines[tree.lineno - 1:])  # from the ``def``/``class`` line on
        head = "".join(f"@{ast.get_source_segment(source, d)}\n" for d in kept)
        for dep in sorted(_free_names(tree, kept)):
            written = _literal_assignment(module, dep)
            if written is not None and dep not in self._bound:
                # a literal is copied as the module writes it: a memo the process has filled
                # since (a worker's recent modules) starts empty in the copy as it did here
                self._bound[dep] = module.__dict__.get(dep)
                self._defs.append((dep, f"{dep} = {written}"))
            elif dep in module.__dict__:
                self.add(module.__dict__[dep], dep)
            elif not hasattr(builtins, dep):
                raise CopyError(f"{obj.__qualname__} uses {dep!r}, which {obj.__module__} does "
                                "not define at module level")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self._modules.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                self._modules.add((node.module or "").partition(".")[0])
        if "fuzzconv" in self._modules or any(isinstance(n, ast.ImportFrom) and n.level
                                              for n in ast.walk(tree)):
            raise CopyError(f"{obj.__qualname__} imports fuzzconv inside its body: use a "
                            "module-level import, which can be copied")
        self._defs.append((name, head + body))

    def _render(self, value: Any, name: str) -> str:
        """A module-level value as Python source (plain data, or names of copied functions)."""
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            items = [self._render(v, name) for v in value]
            if isinstance(value, tuple):
                return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
            return f"[{', '.join(items)}]"
        if isinstance(value, (set, frozenset)):
            items = sorted(self._render(v, name) for v in value)
            inner = "{" + ", ".join(items) + "}" if items else ""
            return f"frozenset({inner})" if isinstance(value, frozenset) else (inner or "set()")
        if isinstance(value, dict):
            return "{" + ", ".join(f"{self._render(k, name)}: {self._render(v, name)}"
                                   for k, v in value.items()) + "}"
        if isinstance(value, re.Pattern):
            self.add(re, "re")
            return f"re.compile({value.pattern!r}, {int(value.flags)})"
        if (inspect.isfunction(value) or inspect.isclass(value)) and is_fuzzconv(value):
            return self.add(value)
        raise CopyError(f"{name} holds a {type(value).__name__}, which cannot be copied")

    # -- reading --------------------------------------------------------------------------------
    @property
    def names(self) -> set[str]:
        """The names the copied code defines or imports."""
        return set(self._bound)

    @property
    def modules(self) -> list[str]:
        """Top-level modules the copied code imports (standard library included), sorted."""
        return sorted(m for m in self._modules if m and m != "__future__")

    def source_of(self, name: str) -> str:
        """The copied source of one function or class."""
        return next(src for n, src in self._defs if n == name)

    def text(self) -> str:
        """The import lines, then every definition, dependencies first."""
        imports = sorted(set(self._imports.values()), key=lambda line: (line.startswith("from"),
                                                                       line))
        defs = "\n\n\n".join(src for _, src in self._defs)
        return "\n".join(imports) + "\n\n\n" + defs + "\n"


def _same_value(a: Any, b: Any) -> bool:
    """Equal plain data bound under one name in two modules (a shared constant) is one thing."""
    plain = (type(None), bool, int, float, str, bytes, tuple, list, dict, set, frozenset)
    return isinstance(a, plain) and type(a) is type(b) and a == b


def _literal_assignment(module: types.ModuleType, name: str) -> str | None:
    """The source of ``name = <literal>`` when that is the module's only top-level binding of
    ``name``; else None."""
    try:
        tree = _module_tree(module.__name__)
    except (OSError, TypeError, SyntaxError):
        return None
    values = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            values.append(node.value)
    if len(values) != 1:
        return None
    try:
        ast.literal_eval(values[0])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return ast.unparse(values[0])


@functools.lru_cache(maxsize=None)
def _module_tree(module: str) -> ast.Module:
    return ast.parse(inspect.getsource(sys.modules[module]))


def _module_import(module: types.ModuleType, name: str) -> str:
    full = module.__name__
    if full == name:
        return f"import {full}"
    parent, _, last = full.rpartition(".")
    if last == name and parent:
        return f"from {parent} import {name}"
    return f"import {full} as {name}"


def _object_import(obj: Any, name: str) -> str:
    module, qualname = obj.__module__, obj.__qualname__
    if "." in qualname or getattr(importlib.import_module(module), qualname, None) is not obj:
        raise CopyError(f"{name} ({module}.{qualname}) cannot be imported by its name")
    return f"from {module} import {qualname}" + (f" as {name}" if name != qualname else "")


def _registers(decorator: ast.expr, module: types.ModuleType) -> bool:
    """Whether a decorator is fuzzconv's own (a registration), which a copy drops."""
    root = decorator.func if isinstance(decorator, ast.Call) else decorator
    while isinstance(root, ast.Attribute):
        root = root.value
    return isinstance(root, ast.Name) and is_fuzzconv(module.__dict__.get(root.id))


def _free_names(tree: ast.AST, decorators: list[ast.expr]) -> set[str]:
    """Names a definition reads but does not bind itself (annotations aside: ``repro.py`` has
    ``from __future__ import annotations``, so they are never evaluated)."""
    loads: set[str] = set()
    bound: set[str] = set()
    for node in _walk_without_annotations(tree, decorators):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node is not tree:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loads - bound


def _walk_without_annotations(tree: ast.AST, decorators: list[ast.expr]) -> Iterator[ast.AST]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                skip.add(id(node.returns))
            if node is tree:
                skip.update(id(d) for d in node.decorator_list)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            skip.add(id(node.annotation))
        elif isinstance(node, ast.AnnAssign):
            skip.add(id(node.annotation))
        elif isinstance(node, ast.ClassDef) and node is tree:
            skip.update(id(d) for d in node.decorator_list)
    for d in decorators:
        skip.discard(id(d))  # kept decorators are evaluated
    stack = [tree]
    while stack:
        node = stack.pop()
        if id(node) in skip:
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))
