"""The step and runtime registry: what can be applied to which artifact format, with which choices.

Built-in steps (``fuzzconv/steps/*.py``) and plugins register through the same decorators in
:mod:`fuzzconv.plugins`. A registered function is imported in two places: the orchestrator reads its
metadata (name, formats, family, parameter choices, defaults) and never calls it; the worker of its
family calls it. Step modules therefore import frameworks inside functions only.

Formats are the kinds of artifact a pipeline passes along: ``keras``, ``tflite``, ``onnx``,
``torch``, ``relax`` (a TVM Relax IRModule) and ``tvm`` (a compiled TVM library).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import ChainError, UsageError

FORMATS = ("keras", "tflite", "onnx", "torch", "relax", "tvm")

# The main file of an artifact of each format, inside its artifact directory.
ARTIFACT_FILE = {
    "keras": "model.keras",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
    "torch": "model.torch.json",
    "relax": "module.json",
    "tvm": "lib.so",
}

# Which worker runs what. "onnx" and "ort" steps share the ORT worker; TVM's torch frontend needs
# torch, which is safe beside TVM (it is TensorFlow that must stay alone).
FAMILIES = ("tf", "torch", "tvm", "ort")
FAMILY_EXTRA = {"tf": "tf", "torch": "torch", "tvm": "tvm", "ort": "ort"}
FAMILY_MODULES = {
    "tf": ("tensorflow", "keras", "tf2onnx"),
    "torch": ("torch", "torchvision", "onnx2torch"),
    "tvm": ("tvm", "onnx"),
    "ort": ("onnxruntime", "onnx"),
}


def family_available(family: str) -> str | None:
    """Why a family's worker cannot start here (a missing module), or None when it can.

    Uses ``importlib.util.find_spec`` so nothing is imported.
    """
    for mod in FAMILY_MODULES[family]:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'fuzzconv[{FAMILY_EXTRA[family]}]')"
    return None


def _declared(decl: bool | dict[str, list], param: str | None, value: Any) -> bool:
    if decl is True:
        return True
    if not isinstance(decl, dict) or param is None:
        return False
    return _jsonable(value) in [_jsonable(v) for v in decl.get(param, [])]


def _jsonable(value: Any) -> Any:
    """Normalise a parameter value so that equal values hash and compare equal."""
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    return value


@dataclass(frozen=True)
class Operation:
    """A step (``src`` format → ``dst`` format) or a runtime (``src`` format, ``dst`` None).

    Args:
        name: dotted name, e.g. ``keras.tf2onnx``.
        kind: ``step`` or ``runtime``.
        src: the format it takes.
        dst: the format it makes (steps only).
        family: which worker runs it.
        fn: the function the worker calls.
        choices: for each parameter, the values a hunt draws from.
        defaults: for each parameter, the value the shrinker resets to.
        source_file: the plugin file that defined it, or None for built-ins and entry points.
        devices: devices it can run on.
        doc: one line of help.
    """

    name: str
    kind: str
    src: str
    dst: str | None
    family: str
    fn: Callable[..., Any] = field(compare=False, repr=False)
    choices: dict[str, list] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    source_file: str | None = None
    devices: tuple[str, ...] = ("cpu",)
    doc: str = ""
    timeout: float | None = None
    # Makes coherent parameters equal: e.g. tvm.pass drops ``args`` its named pass ignores, so
    # FoldConstant with another pass's arguments is FoldConstant, not a new configuration.
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        default=None, compare=False, repr=False)
    # What the hunt puts first (see :meth:`changes_arithmetic`): True when the whole step changes
    # the numbers a model computes, or, per parameter, the values that do (reduced precision,
    # quantisation, fast-math, layout changes, generated schedules).
    arithmetic: bool | dict[str, list] = field(default=False, compare=False)
    # The subset of those that compute in reduced precision (float16) or quantise (int8): they
    # move logits by margins' worth, where reassociation and layout move them by rounding errors.
    precision: bool | dict[str, list] = field(default=False, compare=False)
    quantization: bool | dict[str, list] = field(default=False, compare=False)
    # The parameter values of the unoptimised form of this step or runtime (an optimisation's
    # slowdown is measured against it): e.g. ORT's graph level "disable", torch eager.
    unoptimized: dict[str, Any] = field(default_factory=dict, compare=False)
    # Seconds a run of this step costs beyond what measurements and priors know, with the
    # reason, or None: ``cost(model, params)`` (a tuned build tunes what its database lacks).
    cost: Callable[[str, dict[str, Any]], tuple[float, str] | None] | None = field(
        default=None, compare=False, repr=False)
    # What a bug bundle's repro.py runs for this step when it is not ``fn`` itself: the same
    # transformation without what only a hunt needs (tvm.pass first checks its pass against the
    # list probed from TVM). Called like ``fn``.
    recipe: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def repro_fn(self) -> Callable[..., Any]:
        """The function repro.py runs for this step or runtime (see ``recipe``)."""
        return self.recipe or self.fn

    @property
    def optional(self) -> bool:
        """A same-format step (a pass, an onnx→onnx rewrite) can be dropped from a chain."""
        return self.kind == "step" and self.src == self.dst

    def changes_arithmetic(self, param: str | None = None, value: Any = None) -> bool:
        """Whether this step (``param`` None) or one of its parameter values is declared to
        change the arithmetic. A step declared whole counts for every value."""
        return _declared(self.arithmetic, param, value) or self.reduces_precision(param, value)

    def reduces_precision(self, param: str | None = None, value: Any = None) -> bool:
        """Whether this step or parameter value is declared to compute in reduced precision
        (quantising included)."""
        return _declared(self.precision, param, value) or self.quantizes(param, value)

    def quantizes(self, param: str | None = None, value: Any = None) -> bool:
        """Whether this step or parameter value is declared to quantise (to int8 and the like)."""
        return _declared(self.quantization, param, value)

    def unoptimized_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with every optimisation knob at its unoptimised value."""
        return self.canonical_params({**params, **self.unoptimized})

    @property
    def is_plugin(self) -> bool:
        return self.source_file is not None

    def canonical_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults and reject unknown parameters, so equal configurations hash equal."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise UsageError(
                f"{self.name}: unknown parameter {unknown[0]!r} "
                f"(known: {', '.join(sorted(self.defaults)) or 'none'})"
            )
        out = {k: _jsonable(params.get(k, v)) for k, v in self.defaults.items()}
        if self.normalize is not None:
            out = self.normalize(out)
        return dict(sorted(out.items()))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "from": self.src,
            "to": self.dst,
            "family": self.family,
            "params": {k: {"default": _jsonable(self.defaults[k]),
                           "choices": _jsonable(self.choices.get(k, [self.defaults[k]]))}
                       for k in self.defaults},
            "devices": list(self.devices),
            "plugin": self.source_file,
            "doc": self.doc,
        }


class Registry:
    """All known steps and runtimes."""

    def __init__(self) -> None:
        self.ops: dict[str, Operation] = {}
        self.plugin_files: list[str] = []
        self._digests: dict[str, str] = {}  # plugin file -> digest of it and its helpers, as loaded

    def add(self, op: Operation) -> None:
        if op.src not in FORMATS or (op.dst is not None and op.dst not in FORMATS):
            raise UsageError(f"{op.name}: unknown format {op.src!r} → {op.dst!r} (formats: {', '.join(FORMATS)})")
        old = self.ops.get(op.name)
        if old is not None and old.source_file != op.source_file:
            raise UsageError(f"step {op.name!r} is defined twice ({old.source_file or 'built-in'} and {op.source_file or 'built-in'})")
        self.ops[op.name] = op

    def get(self, name: str, kind: str | None = None) -> Operation:
        op = self.ops.get(name)
        if op is None or (kind is not None and op.kind != kind):
            what = kind or "step"
            names = sorted(n for n, o in self.ops.items() if kind is None or o.kind == kind)
            raise UsageError(f"unknown {what} {name!r} (known: {', '.join(names)})")
        return op

    def steps(self) -> list[Operation]:
        return sorted((o for o in self.ops.values() if o.kind == "step"), key=lambda o: o.name)

    def runtimes(self) -> list[Operation]:
        return sorted((o for o in self.ops.values() if o.kind == "runtime"), key=lambda o: o.name)

    def steps_from(self, fmt: str) -> list[Operation]:
        return [o for o in self.steps() if o.src == fmt]

    def runtimes_for(self, fmt: str) -> list[Operation]:
        return [o for o in self.runtimes() if o.src == fmt]

    def check_chain(self, source_format: str, steps: list[tuple[str, dict]], runtime: str) -> None:
        """Refuse a chain whose formats do not fit, naming the first offending step."""
        fmt = source_format
        for i, (name, _params) in enumerate(steps):
            op = self.get(name, "step")
            if op.src != fmt:
                raise ChainError(
                    f"step {i + 1} ({name}) takes {op.src}, but the chain has {fmt} there"
                )
            fmt = op.dst  # type: ignore[assignment]
        rt = self.get(runtime, "runtime")
        if rt.src != fmt:
            raise ChainError(f"runtime {runtime} runs {rt.src}, but the chain ends in {fmt}")

    def load_plugin_file(self, path: str | Path) -> None:
        """Import a plugin file; its decorators register into this registry."""
        path = Path(path).resolve()
        if not path.is_file():
            raise UsageError(f"plugin file not found: {path}")
        if str(path) in self.plugin_files:
            return
        mod_name = "fuzzconv_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        # Its own modules import as they would for a script run from its directory.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        digest = sources_digest((name, f.read_bytes()) for name, f in plugin_files(path))
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load plugin file {path}")
        module = importlib.util.module_from_spec(spec)
        token = _CURRENT.set_plugin(self, str(path))
        try:
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        except UsageError:
            raise
        except BaseException as exc:  # a plugin that raises on import is bad input, not our crash
            sys.modules.pop(mod_name, None)
            raise UsageError(f"plugin {path.name} failed on import: {type(exc).__name__}: {exc}") from None
        finally:
            _CURRENT.reset(token)
        self.plugin_files.append(str(path))
        self._digests[str(path)] = digest

    def plugin_digest(self, name: str) -> str | None:
        """Content hash of the plugin file behind a step and its helper modules, as they were when
        loaded, so edited plugins do not hit stale cache."""
        op = self.ops.get(name)
        if op is None or op.source_file is None:
            return None
        return self._digests.get(op.source_file)


def sources_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """Content hash of a plugin file and the helper code it imports: (name relative to the
    plugin's directory, contents) pairs, the plugin first (see :func:`plugin_files`)."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


def plugin_files(path: str | Path) -> list[tuple[str, Path]]:
    """A plugin file and the code beside it that it imports, directly or through each other, as
    (name relative to the plugin's directory, path) pairs, the plugin first.

    A plugin may keep helpers in its own directory and import them by name: ``name.py`` modules,
    and packages (``name/`` directories), which count whole: every ``.py`` file below them, since
    their modules import each other relatively. These travel with it to Ray nodes and into bug
    bundles, and their contents are part of its cache key. Other files in a package (data) and
    modules found elsewhere do not count: they must be where the plugin runs. Imports are read
    from the source (nothing is run), so an import made by building the module name at run time
    is not seen.
    """
    path = Path(path).resolve()
    home = path.parent
    found: dict[Path, str] = {path: path.name}
    todo = [path]
    looked: set[str] = set()  # top-level names already resolved (a package is globbed once)

    def add(source: Path) -> None:
        if source not in found:
            found[source] = source.relative_to(home).as_posix()
            todo.append(source)

    while todo:
        try:
            tree = ast.parse(todo.pop().read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue  # loading it says what is wrong
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue  # relative imports stay inside a package, which is carried whole
            for name in names:
                top = name.partition(".")[0]
                if top in looked:
                    continue
                looked.add(top)
                # as Python finds it: a package with __init__.py, a module, a namespace package
                package = (home / top / "__init__.py").is_file()
                if not package and (home / f"{top}.py").is_file():
                    add(home / f"{top}.py")
                elif (home / top).is_dir():
                    for source in sorted((home / top).rglob("*.py")):
                        rel = source.relative_to(home).parts
                        if source.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                                         for part in rel):
                            add(source)
    return [(name, source) for source, name in found.items()]


class _Current:
    """Where decorators register: the default registry, or one loading a plugin file."""

    def __init__(self) -> None:
        self.registry: Registry | None = None
        self.source_file: str | None = None

    def set_plugin(self, registry: Registry, source_file: str) -> tuple:
        prev = (self.registry, self.source_file)
        self.registry, self.source_file = registry, source_file
        return prev

    def reset(self, prev: tuple) -> None:
        self.registry, self.source_file = prev


_CURRENT = _Current()
_DEFAULT: Registry | None = None
_BUILTINS = ("keras", "tflite", "onnx", "ort", "torch", "tvm")


def register(op_kwargs: dict[str, Any], fn: Callable[..., Any]) -> Operation:
    """Called by the decorators in :mod:`fuzzconv.plugins`."""
    sig = inspect.signature(fn)
    defaults = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty and p.name not in ("ctx",)
    }
    choices = {k: list(v) for k, v in op_kwargs.pop("choices").items()}
    for k in (*(op_kwargs.get("unoptimized") or {}),
              *(op_kwargs["arithmetic"] if isinstance(op_kwargs.get("arithmetic"), dict) else ()),
              *(op_kwargs["precision"] if isinstance(op_kwargs.get("precision"), dict) else ()),
              *(op_kwargs["quantization"] if isinstance(op_kwargs.get("quantization"), dict)
                else ())):
        if k not in defaults:
            raise UsageError(f"{op_kwargs['name']}: {k!r} is not a parameter with a default")
    for k, vals in choices.items():
        if k not in defaults:
            raise UsageError(f"{op_kwargs['name']}: choice {k!r} is not a parameter with a default")
        if _jsonable(defaults[k]) not in [_jsonable(v) for v in vals]:
            vals.insert(0, defaults[k])
    registry = _CURRENT.registry or default_registry(load_builtins=False)
    op = Operation(fn=fn, choices=choices, defaults=defaults,
                   source_file=_CURRENT.source_file, **op_kwargs)
    registry.add(op)
    return op


def default_registry(load_builtins: bool = True) -> Registry:
    """The process-wide registry: built-in steps, then entry-point plugins."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    if load_builtins and not getattr(_DEFAULT, "_loaded", False):
        _DEFAULT._loaded = True  # type: ignore[attr-defined]
        for mod in _BUILTINS:
            importlib.import_module(f"fuzzconv.steps.{mod}")
        _load_entry_points()
    return _DEFAULT


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="fuzzconv.plugins"):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not break the tool
            print(f"warning: plugin entry point {ep.name} failed to load: {exc}", file=sys.stderr)


def fresh_registry(plugin_files: list[str] | tuple[str, ...] = ()) -> Registry:
    """A registry with the built-ins plus the named plugin files (used per command and per worker)."""
    base = default_registry()
    reg = Registry()
    reg.ops = dict(base.ops)
    for f in plugin_files:
        reg.load_plugin_file(f)
    return reg
